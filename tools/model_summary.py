"""Prints parameter counts per component for a config, using jax.eval_shape (no real memory).

    python tools/model_summary.py --config=configs/pretrain.py:pi0
"""

import sys

from vla_jax.platform import jax_defaults

jax_defaults()

from absl import app  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vla_jax.config import flags_parser  # noqa: E402
from vla_jax.models.summary import summary_table  # noqa: E402
from vla_jax.models.vla import make_config  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:arg].", lock_config=True)


def main(argv):
    del argv
    config = _CONFIG.value
    try:
        cfg = make_config(config.model)
    except ValueError as e:  # ConfigError included: one line naming the field
        sys.exit(f"error: {e}")
    table, total, derived = summary_table(cfg)
    print(f"preset={config.preset} action_head={cfg.action_head} dtype={cfg.decoder.dtype}")
    print(table)
    print(f"total: {total / 1e9:.3f}B parameters (formula: {derived / 1e9:.3f}B)")


if __name__ == "__main__":
    app.run(main, flags_parser=flags_parser)
