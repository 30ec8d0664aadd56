"""Prepare every dataset of a training config for training: the dataset as released (TFDS directory,
TFRecord as Open X-Embodiment publishes it, or array_record) -> the prepared layout the trainer reads,
plus normalization statistics. Resumable: finished shards are kept; up-to-date datasets are skipped.

    python tools/prepare_data.py --config=configs/pretrain.py:debug,mixture=bridge \\
        --config.data.data_dir=data/oxe [--workers=16]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vla_jax.platform import jax_defaults  # noqa: E402

jax_defaults()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vla_jax.config import flags_parser  # noqa: E402
from vla_jax.data import DataError, prepare_all  # noqa: E402
from vla_jax.extras import needs_extras  # noqa: E402

config_flags.DEFINE_config_file("config", None, "training config, e.g. configs/pretrain.py:debug", lock_config=False)
flags.DEFINE_integer("workers", None, "processes, one source shard each at a time (default: all cores)")


@needs_extras
def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        prepare_all(flags.FLAGS.config, num_workers=flags.FLAGS.workers)
    except DataError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=flags_parser)
