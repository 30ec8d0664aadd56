"""``python -m vla_jax.train --config=configs/pretrain.py:debug --workdir=DIR`` (see vla_jax/train/loop.py)."""

from vla_jax.platform import jax_defaults

jax_defaults()

from absl import app  # noqa: E402

from vla_jax.config import flags_parser  # noqa: E402
from vla_jax.extras import needs_extras  # noqa: E402
from vla_jax.train import loop  # noqa: E402

if __name__ == "__main__":
    app.run(needs_extras(loop.main), flags_parser=flags_parser)
