"""Data pipeline: RLDS robot mixtures and web vision-language data through tensorflow-datasets and grain.

Public entry points (see docs/data.md):

- :func:`prepare_all` / :func:`prepare_dataset`: datasets as released (TFDS, TFRecord or array_record) ->
  the prepared layout the pipeline reads, with statistics (tools/prepare_data.py).
- :func:`make_train_iterator` / :func:`make_eval_iterator`: numpy batches in the vla_jax/batch.py format.
- :func:`make_policy_io`: the same preprocessing for online (closed-loop) inference + action un-normalization.
- :func:`generate_datasets`: the simulated tabletop datasets, prepared, and tokenizer (tools/generate_data.py).
- :func:`compute_all_stats` / :func:`load_stats` / :func:`combine_stats` / :class:`Normalizer`: statistics.
- :class:`Tokenizer`, :func:`check_tokenizer`, :func:`train_tokenizer`.
- :data:`SPECS`, :class:`RobotSpec`, :class:`WebSpec`: per-dataset standardization.
- :func:`write_tiny_bridge_dataset`: a tiny dataset in the real ``bridge_dataset`` layout;
  :func:`write_tiny_oxe_dataset`: one in the step layout of any OXE release with a spec (vla_jax/data/oxe_specs.py).
- :func:`write_lerobot_dataset`: a LeRobotDataset (v2.1 / v3.0) directory; such directories are the robot
  dataset kind ``"lerobot"`` (vla_jax/data/lerobot.py).
- :class:`DataError`: the one exception type; its message is one line naming dataset and field.
"""

from vla_jax.data import oxe_specs  # noqa: F401  (registers the Open X-Embodiment specs)
from vla_jax.data.builders import write_tiny_bridge_dataset, write_tiny_oxe_dataset
from vla_jax.data.errors import DataError
from vla_jax.data.generate import generate_datasets
from vla_jax.data.lerobot import LeRobotFrames
from vla_jax.data.lerobot_writer import write_lerobot_dataset
from vla_jax.data.mixture import DataIterator, describe_mixture, make_eval_iterator, make_train_iterator, source_names
from vla_jax.data.prepare import prepare_all, prepare_dataset
from vla_jax.data.prompts import PROMPT_FORMATS
from vla_jax.data.policy_io import PolicyIO, compute_all_stats, make_policy_io
from vla_jax.data.specs import SPECS, RobotSpec, WebSpec, get_spec, register_spec
from vla_jax.data.norm_stats import Normalizer, combine_stats, load_stats, normalize, unnormalize
from vla_jax.data.tokenizer import Tokenizer, check_tokenizer, train_tokenizer
from vla_jax.data.transforms import OPS, register_op

__all__ = [
    "OPS",
    "PROMPT_FORMATS",
    "SPECS",
    "DataError",
    "DataIterator",
    "LeRobotFrames",
    "Normalizer",
    "PolicyIO",
    "RobotSpec",
    "Tokenizer",
    "WebSpec",
    "check_tokenizer",
    "combine_stats",
    "compute_all_stats",
    "describe_mixture",
    "generate_datasets",
    "get_spec",
    "load_stats",
    "make_eval_iterator",
    "make_policy_io",
    "make_train_iterator",
    "normalize",
    "prepare_all",
    "prepare_dataset",
    "register_op",
    "register_spec",
    "source_names",
    "train_tokenizer",
    "unnormalize",
    "write_lerobot_dataset",
    "write_tiny_bridge_dataset",
    "write_tiny_oxe_dataset",
]
