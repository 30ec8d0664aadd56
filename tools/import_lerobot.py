"""Imports a LeRobot pi0 or pi0.5 policy folder as a vla_jax run the trainer, evaluator and exporter start from.

    python tools/import_lerobot.py --folder=FOLDER --out=runs/pi0_lerobot [--dataset=NAME] [--dtype=float32]
    python -m vla_jax.train --config=configs/pretrain.py:size=pi0 \
        --config.init.from_checkpoint=runs/pi0_lerobot --workdir=runs/pi0_ft

FOLDER is what LeRobot's ``save_pretrained`` (or ``tools/export.py --format=lerobot``) writes: ``model.safetensors``
(PI0Policy / PI05Policy state_dict), ``config.json`` (``"type": "pi0"`` | ``"pi05"``) and ``policy_preprocessor.json``
with its normalizer state file. Writes ``<out>/checkpoints/0/`` (params-only, ``write_checkpoint``) with the ``pi0``
or ``pi05`` preset at the weights' sizes (chunk, prompt length, cameras, flow steps and, for pi0.5, the max state
dim from config.json) and the normalizer's statistics under ``--dataset`` (pi0: MEAN_STD -> ``normal``, pi0.5:
QUANTILES -> ``bounds_q99``; none when the normalizer carries none). Prints what mapped. Errors are one line on
stderr, exit code 2.
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
    p.add_argument("--folder", required=True, help="LeRobot pi0 / pi05 policy folder (model.safetensors, config.json, processors)")
    p.add_argument("--out", required=True, help="new vla_jax run directory")
    p.add_argument("--dataset", default="lerobot", help="dataset name of the imported norm stats (default: lerobot)")
    p.add_argument("--dtype", default=None, help="compute dtype of the run's config (default: the preset's)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    from vla_jax.config import ConfigError
    from vla_jax.interop.lerobot import LerobotError, import_folder
    from vla_jax.train.checkpoint import CheckpointError

    overrides = {"model.dtype": args.dtype} if args.dtype else {}
    try:
        report = import_folder(args.folder, args.out, args.dataset, overrides)
    except (LerobotError, ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    print(report.format(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
