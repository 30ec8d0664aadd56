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

Names are imported on first use, so ``vla_jax.data.transforms`` / ``norm_stats`` / ``tokenizer`` / ``specs``
load without grain, JAX or TensorFlow (the policy server's PyTorch and ONNX backends rely on it). The Open
X-Embodiment specs are registered with the package, the ``lerobot`` dataset kind by ``settings.read_settings``.
"""

from __future__ import annotations

import importlib

from vla_jax.data import oxe_specs  # noqa: F401  (registers the Open X-Embodiment specs)

_LAZY = {
    "write_tiny_bridge_dataset": "builders",
    "write_tiny_oxe_dataset": "builders",
    "DataError": "errors",
    "generate_datasets": "generate",
    "LeRobotFrames": "lerobot",
    "write_lerobot_dataset": "lerobot_writer",
    "DataIterator": "mixture",
    "describe_mixture": "mixture",
    "make_eval_iterator": "mixture",
    "make_train_iterator": "mixture",
    "source_names": "mixture",
    "prepare_all": "prepare",
    "prepare_dataset": "prepare",
    "PROMPT_FORMATS": "prompts",
    "PolicyIO": "policy_io",
    "compute_all_stats": "policy_io",
    "make_policy_io": "policy_io",
    "SPECS": "specs",
    "RobotSpec": "specs",
    "WebSpec": "specs",
    "get_spec": "specs",
    "register_spec": "specs",
    "Normalizer": "norm_stats",
    "combine_stats": "norm_stats",
    "load_stats": "norm_stats",
    "normalize": "norm_stats",
    "unnormalize": "norm_stats",
    "Tokenizer": "tokenizer",
    "check_tokenizer": "tokenizer",
    "train_tokenizer": "tokenizer",
    "OPS": "transforms",
    "register_op": "transforms",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_LAZY)
