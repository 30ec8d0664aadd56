"""Print the effective data mixture (weights, weight shares, sizes, sampling shares) and write a PNG grid of
decoded training samples.

    python tools/inspect_data.py --config=configs/pretrain.py:debug --out=/tmp/samples.png [--count=6]
    python tools/inspect_data.py --config=configs/pretrain.py:debug,mixture=oxe_magic_soup \
        --config.data.data_dir=/data/oxe --config.data.drop_missing=True --count=0
    python tools/inspect_data.py --config=configs/pretrain.py:debug,mixture=oxe_magic_soup --sizes=false
        # the weight shares alone: reads no data

--count=0 prints the table only. The share column is the weights scaled by the datasets' transition counts
and renormalized when config.data.balance_by_size is on (Octo's and OpenVLA's balance_weights; the OXE
mixtures' default), else the normalized weights.
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
from vla_jax.data import DataError, visualize  # noqa: E402
from vla_jax.extras import needs_extras  # noqa: E402

config_flags.DEFINE_config_file("config", None, "training config, e.g. configs/pretrain.py:debug", lock_config=False)
flags.DEFINE_string("out", "data_samples.png", "PNG file to write")
flags.DEFINE_integer("count", 6, "number of samples to draw (0: the mixture table only)")
flags.DEFINE_bool("sizes", True, "read the datasets' sizes (statistics) for the sampling shares; false: weights only")


@needs_extras
def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        run()
    except DataError as e:
        sys.exit(f"error: {e}")


def run():
    print(visualize.mixture_table(flags.FLAGS.config, sizes=flags.FLAGS.sizes))
    if flags.FLAGS.count > 0:
        print("wrote", visualize.plot_samples(flags.FLAGS.config, flags.FLAGS.out, flags.FLAGS.count))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=flags_parser)
