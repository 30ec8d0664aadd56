"""Imports an exported PyTorch folder back into a JAX checkpoint the trainer can start from.

    python tools/import_torch.py --folder=exports/debug --out=runs/debug_import [--config=configs/pretrain.py:debug]
    python -m vla_jax.train --config=configs/pretrain.py:debug --config.init.from_checkpoint=runs/debug_import \
        --workdir=runs/debug_ft

Writes ``<out>/checkpoints/0/``, a params-only checkpoint (params from model.safetensors, EMA = params when
the config uses EMA, no optimizer state) with the training config stored at export time (or --config) and
the folder's norm_stats.json; a new run starts from it with ``config.init.from_checkpoint``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vla_jax.extras import needs_extras  # noqa: E402
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@needs_extras
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folder", required=True, help="exported folder (config.json + model.safetensors)")
    p.add_argument("--out", required=True, help="new run directory")
    p.add_argument("--config", default=None, help="training config (default: the one saved in config.json)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from vla_jax.config import ConfigError
    from vla_jax.export.package import ExportError, import_torch

    try:
        import_torch(args.folder, args.out, args.config)
    except (ExportError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
