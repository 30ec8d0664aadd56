"""Evaluates a training checkpoint: closed-loop success in the simulator + offline validation metrics.

    python tools/evaluate.py --workdir=runs/debug --episodes=50 --baselines
    python tools/evaluate.py --workdir=runs/debug --step=200 --ema --tasks=pick,place --embodiments=single_arm \
        --splits=train,heldout_combo --execute_steps=4 --out=/tmp/eval
    python tools/evaluate.py --server=ws://127.0.0.1:8000 --out=/tmp/eval_served   # through python -m vla_jax.serve
    python tools/evaluate.py --workdir=runs/mt50 --suite=metaworld_mt50 --episodes=10 --baselines
    python tools/evaluate.py --policy=expert,random --suite=metaworld_mt50 --episodes=10 --out=/tmp/mt50_ceiling

Writes results.json, summary.md, summary.png, filmstrip_model.png and rollouts_model.gif into
``<workdir>/eval/<step>`` (``<step>-ema`` with --ema) or --out, and prints a compact table. The same
flags give the same numbers on every run. With --server the policy is a running policy server (closed loop
only, the robot it serves; docs/serving.md). With --policy, built-in policies (the scripted expert, random actions)
run without a checkpoint. Meta-World suites also print success by difficulty group beside published rows. Errors
are one line on stderr, exit code 2. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vla_jax.platform import jax_defaults  # noqa: E402
from vla_jax.extras import needs_extras  # noqa: E402

jax_defaults()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="training run directory (with checkpoints/<step>/)")
    source.add_argument("--server", help="ws://HOST:PORT of a policy server (python -m vla_jax.serve): closed loop")
    source.add_argument("--policy", help="comma list of built-in policies without a checkpoint: expert, random")
    p.add_argument("--suite", default="tabletop", help="tabletop | metaworld_mt50 | metaworld_mt10")
    p.add_argument("--api_key", default=None, help="the server's --api_key")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA parameters")
    p.add_argument("--episodes", type=int, default=50, help="episodes per (embodiment, task, split) cell")
    p.add_argument("--tasks", default="all", help="all | comma list of the suite's tasks (tabletop: pick, place, "
                   "push; Meta-World: e.g. door-open,drawer-close)")
    p.add_argument("--embodiments", default="all", help="all | comma list of single_arm, bimanual (tabletop)")
    p.add_argument("--splits", default="all", help="all | comma list of the suite's splits (tabletop: train, "
                   "heldout_combo, heldout_paraphrase; Meta-World: train, heldout_paraphrase)")
    p.add_argument("--execute_steps", type=int, default=None, help="actions executed per chunk (default: all)")
    p.add_argument("--num_samples", type=int, default=1,
                   help="flow samples averaged into each chunk (1: a single sample, as trained)")
    p.add_argument("--max_steps", type=int, default=None, help="episode step limit (default: the embodiment's)")
    p.add_argument("--baselines", action="store_true", help="also evaluate expert, random and mean-action policies")
    p.add_argument("--out", default=None, help="output directory (default: <workdir>/eval/<step>)")
    p.add_argument("--seed", type=int, default=0, help="episode seeds and flow-sampling noise")
    p.add_argument("--num_envs", type=int, default=16, help="parallel environments (batch of one policy call)")
    p.add_argument("--image_size", type=int, default=None,
                   help="rendered camera resolution (default: tabletop 96, the data's; Meta-World the model's)")
    p.add_argument("--record", type=int, default=1, help="episodes per cell kept for the filmstrip / GIF")
    p.add_argument("--offline_batches", type=int, default=8,
                   help="validation batches per dataset for offline metrics (0: skip, -1: whole split)")
    p.add_argument("--grounding_scenes", type=int, default=20,
                   help="fresh scenes per (embodiment, task) for the first-frame grounding probe (0: skip)")
    p.add_argument("--data_dir", default=None, help="replaces the run's config.data.data_dir")
    return p.parse_args(argv)


@needs_extras
def main(argv=None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from vla_jax.eval.run import EvalError, EvalSettings, evaluate_builtin, evaluate_checkpoint
    from vla_jax.sim.metaworld.env import OpenGLUnavailable
    from vla_jax.train.checkpoint import CheckpointError

    settings = EvalSettings(
        suite=args.suite, step=args.step, ema=args.ema, episodes=args.episodes, families=args.tasks,
        embodiments=args.embodiments,
        splits=args.splits, execute_steps=args.execute_steps, max_steps=args.max_steps, num_samples=args.num_samples,
        baselines=args.baselines, out=args.out, seed=args.seed, num_envs=args.num_envs, image_size=args.image_size,
        record=args.record, offline_batches=None if args.offline_batches < 0 else args.offline_batches,
        grounding_scenes=args.grounding_scenes, data_dir=args.data_dir, progress=sys.stderr.isatty())
    try:
        if args.server:
            from vla_jax.eval.remote import evaluate_server

            only = [f for f in ("step", "ema", "baselines", "data_dir") if getattr(args, f)]
            if only:
                raise EvalError(f"--{only[0]} needs --workdir (--server evaluates the served policy closed loop)")
            evaluate_server(args.server, settings, api_key=args.api_key)
        elif args.policy:
            evaluate_builtin([n.strip() for n in args.policy.split(",") if n.strip()], settings)
        else:
            evaluate_checkpoint(args.workdir, settings)
    except (EvalError, CheckpointError, OpenGLUnavailable) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
