"""Exports a training checkpoint: PyTorch (safetensors) and/or ONNX with a parity check, openpi's or LeRobot's layout.

    python tools/export.py --workdir=runs/debug --out=exports/debug --format=all
    python tools/export.py --workdir=runs/small --step=20000 --ema --out=exports/small --dtype=bfloat16
    python tools/export.py --workdir=runs/pi0_ft --out=exports/pi0_openpi --format=openpi [--dataset=aloha]
    python tools/export.py --workdir=runs/pi0_ft --out=exports/pi0_lerobot --format=lerobot [--dataset=aloha]

Reads parameters only (no optimizer state, no device mesh), so checkpoints saved sharded over any number
of devices export on one CPU. The folder is written only if every parameter is finite and the exported
model reproduces the (finite) JAX actions within --tolerance (float32). --format=openpi (pi0 runs with
openpi_semantics) writes params/ (orbax {"params": ...}) and assets/<dataset>/norm_stats.json as openpi reads
them, exactly converted (no parity gate); --format=lerobot (the same runs and pi05 runs) writes LeRobot's pi0 /
pi0.5 folder (model.safetensors, config.json, processor pipelines with one dataset's norm stats), exactly converted.
Errors are one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vla_jax.extras import needs_extras  # noqa: E402
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="training run directory (with checkpoints/<step>/)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    p.add_argument("--ema", action="store_true", help="export the EMA parameters")
    p.add_argument("--format", default="all", help="pytorch | onnx | all | openpi | lerobot")
    p.add_argument("--dtype", default="float32", help="weights dtype of model.safetensors: float32 | bfloat16 "
                   "(lerobot: as LeRobot's PI0Policy / PI05Policy keep them, norms and projections float32)")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default 18, the lowest the dynamo exporter emits)")
    p.add_argument("--num_steps", type=int, default=None, help="flow steps baked into policy.onnx (default: config)")
    p.add_argument("--tokenizer", default=None, help="SentencePiece .model (default: the run's)")
    p.add_argument("--dataset", default=None, help="--format=openpi: the one dataset whose norm stats to write "
                   "(default: every robot dataset); --format=lerobot: the dataset the folder normalizes with "
                   "(default: the only robot dataset)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max float32 action difference vs JAX")
    return p.parse_args(argv)


@needs_extras
def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from vla_jax.export.package import ExportError, export

    try:
        export(args.workdir, args.out, step=args.step, ema=args.ema, fmt=args.format, dtype=args.dtype,
               opset=args.opset, num_steps=args.num_steps, tokenizer=args.tokenizer, tolerance=args.tolerance,
               dataset=args.dataset)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
