"""Ablation sweeps: train every variant of a sweep config, evaluate each with the same seeds, compare.

    python tools/ablate.py --config=configs/ablations/mixture.py --out=runs/ablate_mixture
    python tools/ablate.py --config=configs/ablations/mixture.py:steps=2000,episodes=50 --out=runs/abl --launch_only
    python tools/ablate.py --config=configs/ablations/mixture.py --out=runs/abl --variants=web_0,web_0.3

Variants train one after the other (``python -m vla_jax.train`` subprocesses into ``<out>/<variant>``),
then ``<out>/comparison.md``, ``comparison.csv``, ``success.png`` and ``val_loss.png`` are written.
Rerunning skips finished variants and resumes half-trained ones. ``--launch_only`` prints one training
command per variant and exits (run them on a cluster, then rerun without it to evaluate and compare).
Errors are one line on stderr, exit code 2. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vla_jax.platform import jax_defaults  # noqa: E402

jax_defaults()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True, help="sweep config, e.g. configs/ablations/mixture.py[:arg]")
    p.add_argument("--out", required=True, help="sweep directory (one workdir per variant)")
    p.add_argument("--launch_only", action="store_true", help="print one training command per variant and exit")
    p.add_argument("--variants", default=None, help="comma list: run only these variants")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from vla_jax.eval.ablate import AblateError, run_sweep
    from vla_jax.eval.run import EvalError
    from vla_jax.train.checkpoint import CheckpointError

    try:
        run_sweep(args.config, args.out, launch_only=args.launch_only, variants=args.variants)
    except (AblateError, EvalError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
