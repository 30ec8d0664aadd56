"""Generate the simulated tabletop TFDS datasets (RLDS robot + web VL) and the default tokenizer.

    python tools/generate_data.py --out_dir data/default [--episodes_per_embodiment 300] [--web_examples 2000]
                                  [--perturb 0.5] [--if_missing] [--lerobot v3.0]

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

from vla_jax.data import generate, lerobot_writer  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--episodes_per_embodiment", type=int, default=generate.DEFAULT_EPISODES)
    p.add_argument("--web_examples", type=int, default=generate.DEFAULT_WEB_EXAMPLES)
    p.add_argument("--val_fraction", type=float, default=0.1)
    p.add_argument("--image_size", type=int, default=96)
    p.add_argument("--num_workers", type=int, default=None, help="simulation processes (default: all cores)")
    p.add_argument("--vocab_size", type=int, default=generate.DEFAULT_VOCAB_SIZE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--perturb", type=float, default=generate.DEFAULT_PERTURB,
                   help="DART noise of the demonstrations: executed actions get pushes of up to this many max "
                        "steps, the expert's actions are recorded (0 = clean demonstrations)")
    p.add_argument("--if_missing", action="store_true", help="keep datasets / tokenizer already complete in out_dir")
    p.add_argument("--lerobot", choices=sorted(lerobot_writer.WRITERS), default=None,
                   help="also write the synthetic LeRobotDataset out_dir/lerobot_aloha of this codebase version")
    a = p.parse_args()
    summary = generate.generate_datasets(
        a.out_dir, episodes_per_embodiment=a.episodes_per_embodiment, web_examples=a.web_examples,
        val_fraction=a.val_fraction, image_size=a.image_size, num_workers=a.num_workers, vocab_size=a.vocab_size,
        seed=a.seed, perturb=a.perturb, if_missing=a.if_missing)
    for name, seconds in summary["seconds"].items():
        print(f"[generate] {name}: {summary['datasets'][name]} in {seconds:.1f}s")
    lerobot_dir = os.path.join(a.out_dir, "lerobot_aloha")
    if a.lerobot and not (a.if_missing and os.path.isfile(os.path.join(lerobot_dir, "meta", "info.json"))):
        lerobot_writer.write_synthetic_aloha(lerobot_dir, a.lerobot, seed=a.seed)
        print(f"[generate] lerobot_aloha: synthetic LeRobotDataset {a.lerobot} in {lerobot_dir}")


if __name__ == "__main__":
    main()
