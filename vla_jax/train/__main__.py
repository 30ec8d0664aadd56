"""``python -m vla_jax.train --config=configs/pretrain.py:debug --workdir=DIR`` (see vla_jax/train/loop.py)."""

from absl import app

from vla_jax.config import flags_parser
from vla_jax.train import loop

if __name__ == "__main__":
    app.run(loop.main, flags_parser=flags_parser)
