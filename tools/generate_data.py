"""Generate the simulated tabletop TFDS datasets (RLDS robot + web VL) and the default tokenizer, or with
--suite Meta-World scripted demonstrations.

    python tools/generate_data.py --out_dir data/default [--episodes_per_embodiment 300] [--web_examples 2000]
                                  [--perturb 0.5] [--if_missing] [--lerobot v3.0]
    python tools/generate_data.py --out_dir data/default --suite=metaworld_mt50 --episodes_per_task=50 \
                                  [--image_size 64] [--noise 0.1] [--tasks door-open,drawer-close]

``--suite=metaworld_mt50|metaworld_mt10`` writes ``out_dir/<suite>`` (successful scripted episodes of every
task, prepared, with statistics) and ``out_dir/tokenizer_metaworld.model`` (mixtures ``metaworld_*``); run it
after the tabletop generation into the same out_dir for ``mixture=metaworld_mt50_cotrain``.

``--lerobot VERSION`` also writes ``out_dir/lerobot_aloha``: a synthetic LeRobotDataset (v2.1 or v3.0) in the
layout of mixture ``lerobot`` (moving gradients, random state and actions: a smoke test, nothing to learn).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vla_jax.platform import jax_defaults  # noqa: E402

jax_defaults()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from vla_jax.data import generate, generate_metaworld, lerobot_writer  # noqa: E402
from vla_jax.extras import needs_extras  # noqa: E402


@needs_extras
def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--episodes_per_embodiment", type=int, default=generate.DEFAULT_EPISODES)
    p.add_argument("--web_examples", type=int, default=generate.DEFAULT_WEB_EXAMPLES)
    p.add_argument("--val_fraction", type=float, default=0.1)
    p.add_argument("--image_size", type=int, default=None, help="camera resolution (default: tabletop 96, "
                   f"Meta-World {generate_metaworld.DEFAULT_IMAGE_SIZE})")
    p.add_argument("--suite", choices=generate_metaworld.SUITES, default=None,
                   help="Meta-World demonstrations instead of the tabletop datasets")
    p.add_argument("--episodes_per_task", type=int, default=generate_metaworld.DEFAULT_EPISODES_PER_TASK,
                   help="--suite: successful demonstrations per task (train split)")
    p.add_argument("--noise", type=float, default=generate_metaworld.DEFAULT_NOISE,
                   help="--suite: std of the Gaussian noise added to the scripted actions")
    p.add_argument("--tasks", default=None, help="--suite: comma list of its tasks (default: all)")
    p.add_argument("--num_workers", type=int, default=None, help="simulation processes (default: all cores)")
    p.add_argument("--vocab_size", type=int, default=None,
                   help=f"tokenizer pieces (default: tabletop {generate.DEFAULT_VOCAB_SIZE}, with --suite 300 more)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--perturb", type=float, default=generate.DEFAULT_PERTURB,
                   help="DART noise of the demonstrations: executed actions get pushes of up to this many max "
                        "steps, the expert's actions are recorded (0 = clean demonstrations)")
    p.add_argument("--if_missing", action="store_true", help="keep datasets / tokenizer already complete in out_dir")
    p.add_argument("--lerobot", choices=sorted(lerobot_writer.WRITERS), default=None,
                   help="also write the synthetic LeRobotDataset out_dir/lerobot_aloha of this codebase version")
    a = p.parse_args()
    if a.suite:
        return generate_suite(a)
    summary = generate.generate_datasets(
        a.out_dir, episodes_per_embodiment=a.episodes_per_embodiment, web_examples=a.web_examples,
        val_fraction=a.val_fraction, image_size=a.image_size or 96, num_workers=a.num_workers,
        vocab_size=a.vocab_size or generate.DEFAULT_VOCAB_SIZE, seed=a.seed, perturb=a.perturb,
        if_missing=a.if_missing)
    for name, seconds in summary["seconds"].items():
        print(f"[generate] {name}: {summary['datasets'][name]} in {seconds:.1f}s")
    lerobot_dir = os.path.join(a.out_dir, "lerobot_aloha")
    if a.lerobot and not (a.if_missing and os.path.isfile(os.path.join(lerobot_dir, "meta", "info.json"))):
        lerobot_writer.write_synthetic_aloha(lerobot_dir, a.lerobot, seed=a.seed)
        print(f"[generate] lerobot_aloha: synthetic LeRobotDataset {a.lerobot} in {lerobot_dir}")
    return 0


def generate_suite(a) -> int:
    from vla_jax.sim.metaworld.env import OpenGLUnavailable
    from vla_jax.sim.metaworld.tasks import TASK_SETS

    tasks = tuple(t.strip() for t in a.tasks.split(",") if t.strip()) if a.tasks else None
    unknown = [t for t in tasks or () if t not in TASK_SETS[a.suite]]
    if unknown or a.episodes_per_task < 1:
        problem = (f"--tasks: {unknown[0]!r} is not a task of {a.suite}" if unknown
                   else "--episodes_per_task must be >= 1")
        print(f"error: {problem} (tasks: vla_jax/sim/metaworld/tasks.py)", file=sys.stderr)
        return 2
    try:
        summary = generate_metaworld.generate_metaworld(
            a.out_dir, a.suite, episodes_per_task=a.episodes_per_task, val_fraction=a.val_fraction,
            image_size=a.image_size or generate_metaworld.DEFAULT_IMAGE_SIZE, noise=a.noise, tasks=tasks,
            num_workers=a.num_workers, vocab_size=a.vocab_size or generate.DEFAULT_VOCAB_SIZE + 300, seed=a.seed,
            if_missing=a.if_missing)
    except OpenGLUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, seconds in summary["seconds"].items():
        print(f"[generate] {name}: {summary['datasets'][name]} in {seconds:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
