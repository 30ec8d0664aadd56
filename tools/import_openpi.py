"""Imports an openpi pi0 checkpoint as a vla_jax run the trainer, evaluator and exporter start from.

    python tools/import_openpi.py --checkpoint=CKPT --out=runs/pi0_base [--asset_id=ID] [--dataset=NAME]
    python -m vla_jax.train --config=configs/pretrain.py:size=pi0 \
        --config.init.from_checkpoint=runs/pi0_base --workdir=runs/pi0_ft

CKPT is an openpi checkpoint directory: ``CKPT/params`` (orbax PyTree checkpoint ``{"params": ...}``) and
optionally ``CKPT/assets/<asset_id>/norm_stats.json``. Writes ``<out>/checkpoints/0/`` (params-only,
``write_checkpoint``) with the ``pi0`` preset at the checkpoint's sizes (read from the parameter shapes,
``openpi_semantics=True``) and the norm stats under ``--dataset`` (default: the asset id). Prints what mapped.
Errors are one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="openpi checkpoint directory (with params/ and assets/)")
    p.add_argument("--out", required=True, help="new vla_jax run directory")
    p.add_argument("--asset_id", default=None, help="assets/<asset_id>/norm_stats.json (default: the only one)")
    p.add_argument("--dataset", default=None, help="dataset name of the norm stats (default: the asset id)")
    p.add_argument("--action_horizon", type=int, default=None, help="chunk length (not in the weights; default 50)")
    p.add_argument("--dtype", default=None, help="compute dtype of the run's config (default: the pi0 preset's)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from vla_jax.config import ConfigError
    from vla_jax.interop.openpi import OpenpiError, import_checkpoint
    from vla_jax.train.checkpoint import CheckpointError

    overrides = {}
    if args.action_horizon:
        overrides["model.action_horizon"] = args.action_horizon
    if args.dtype:
        overrides["model.dtype"] = args.dtype
    try:
        report = import_checkpoint(args.checkpoint, args.out, args.asset_id, args.dataset, overrides)
    except (OpenpiError, ConfigError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(report.format(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
