"""Compute (cache) normalization statistics of every robot dataset of a training config.

    python tools/compute_stats.py --config=configs/pretrain.py:debug [--if_missing]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vla_jax.platform import jax_defaults  # noqa: E402

jax_defaults()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vla_jax.config import flags_parser  # noqa: E402
from vla_jax.data import DataError, compute_all_stats  # noqa: E402
from vla_jax.extras import needs_extras  # noqa: E402

config_flags.DEFINE_config_file("config", None, "training config, e.g. configs/pretrain.py:debug", lock_config=False)
flags.DEFINE_bool("if_missing", False, "keep stats files that are up to date")


@needs_extras
def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        run()
    except DataError as e:
        sys.exit(f"error: {e}")


def run():
    compute_all_stats(flags.FLAGS.config, if_missing=flags.FLAGS.if_missing)


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=flags_parser)
