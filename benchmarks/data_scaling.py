"""Loader throughput against episode length on the prepared layout (vla_jax/data/prepared.py).

    python benchmarks/data_scaling.py [--out_dir=/tmp/vla_jax_data_scaling] [--quick] [--workers=0,1,2]
                                      [--rounds=2] [--seconds=8] [--model_image_size=224]

Writes three datasets in the ``bridge_dataset`` layout (cached in ``--out_dir``): the same number of
transitions (10,000; 1,000 with ``--quick``) in episodes of 25, 100 and 400 steps, two cameras of
256x256 JPEGs of camera-photo size (~25 KB, textured), TFRecord as OXE releases are, in up to 4 shards.
Each is prepared with tools/prepare_data.py's code (timed), then the full training pipeline of the
``bridge`` mixture (debug preset, batch 32, ``--model_image_size`` model input) is timed for every
worker count: samples/s over ``--seconds`` after the first batch, and start-up (iterator + first
batch). Rounds alternate the order of the datasets (A/B/C, then C/B/A) because the machine is shared;
the table gives the medians over rounds of samples/s, start-up and of each round's ratio to the 25-step
dataset. Statistics throughput: compute_stats over the prepared numeric columns (median of 5).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conditions import LoadWatch, machine  # noqa: E402
from vla_jax.platform import jax_defaults  # noqa: E402

jax_defaults()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import logging  # noqa: E402

from vla_jax.config import load_config  # noqa: E402
from vla_jax.data import builders, make_train_iterator, prepare_all, train_tokenizer  # noqa: E402
from vla_jax.data.norm_stats import compute_stats  # noqa: E402
from vla_jax.data.specs import SPECS  # noqa: E402
from vla_jax.sim.grounding_answers import LOCATION_TOKENS  # noqa: E402

NAME = "bridge_dataset"
LENGTHS = (25, 100, 400)
CONFIG = "configs/pretrain.py:debug,mixture=bridge"
INSTRUCTIONS = ("put the carrot on the plate", "open the drawer", "wipe the table with the towel")


def make_dataset(out_dir: str, length: int, transitions: int) -> str:
    """``out_dir/len<length>``: the dataset as released + a tokenizer (kept if already there)."""
    root = os.path.join(out_dir, f"len{length}")
    if not builders.is_complete(root, NAME):
        start = time.perf_counter()
        shards = min(4, transitions // length)  # val gets one episode per shard
        builders.write_tiny_bridge_dataset(root, num_episodes=transitions // length, num_val_episodes=shards,
                                           image_size=256, seed=length, file_format="tfrecord", episode_length=length,
                                           texture=10.0, num_shards=shards)
        print(f"wrote {root}: {transitions // length} episodes of {length} steps in {time.perf_counter() - start:.0f}s",
              flush=True)
    if not os.path.isfile(os.path.join(root, "tokenizer.model")):
        train_tokenizer(list(INSTRUCTIONS) * 20, os.path.join(root, "tokenizer.model"), vocab_size=120,
                        symbols=LOCATION_TOKENS, log=lambda *a: None)
    return root


def config_for(root: str, workers: int, image_size: int):
    return load_config(CONFIG, {"data.data_dir": root, "data.num_workers": workers, "model.image_size": image_size})


def prepare(root: str, workers: int) -> float:
    """Prepares ``root`` from scratch; returns transitions/s."""
    shutil.rmtree(os.path.join(root, "prepared"), ignore_errors=True)
    shutil.rmtree(os.path.join(root, "stats"), ignore_errors=True)
    start = time.perf_counter()
    prepare_all(config_for(root, 0, 64), num_workers=workers, progress=False, log=lambda *a: None)
    seconds = time.perf_counter() - start
    stats = compute_stats(os.path.join(root, "prepared", NAME), NAME, SPECS[NAME], log=lambda *a: None)
    return stats["num_transitions"] / seconds


def stats_rate(root: str) -> float:
    rates = [compute_stats(os.path.join(root, "prepared", NAME), NAME, SPECS[NAME], log=lambda *a: None)
             ["transitions_per_second"] for _ in range(5)]
    return statistics.median(rates)


def measure(root: str, workers: int, image_size: int, seconds: float) -> tuple[float, float]:
    """(start-up s, samples/s) of the training iterator."""
    start = time.perf_counter()
    it = make_train_iterator(config_for(root, workers, image_size))
    next(it)
    startup = time.perf_counter() - start
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        count += len(next(it)["source"])
    rate = count / (time.perf_counter() - t0)
    it.close()
    return startup, rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default="/tmp/vla_jax_data_scaling")
    p.add_argument("--quick", action="store_true", help="1,000 transitions per dataset, 3 s per measurement")
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--model_image_size", type=int, default=224)
    p.add_argument("--prepare_workers", type=int, default=1,
                   help="processes of the timed prepare (1: in this process, no worker start-up in the figure)")
    a = p.parse_args()
    logging.set_verbosity(logging.WARNING)
    transitions, seconds = (1_000, 3.0) if a.quick else (10_000, a.seconds)
    out_dir = os.path.join(a.out_dir, "quick" if a.quick else "full")
    workers = [int(w) for w in a.workers.split(",")]
    load = LoadWatch()
    print(f"machine: {machine('grain', 'tensorflow')}; batch 32, model input {a.model_image_size} px, "
          f"{transitions:,} transitions "
          f"per dataset, 2 cameras 256 px (the bridge spec reads image_0)", flush=True)
    roots = {length: make_dataset(out_dir, length, transitions) for length in LENGTHS}
    import tensorflow  # noqa: F401  (TFRecord reading: imported once, before the timed prepares)

    print(f"\n{'steps/episode':>13} {'prepare tr/s':>13} {'stats tr/s':>12}")
    for length, root in roots.items():
        print(f"{length:>13} {prepare(root, a.prepare_workers):>13,.0f} {stats_rate(root):>12,.0f}", flush=True)

    results: dict = {}  # (length, workers) -> [(startup, rate) per round]
    for r in range(a.rounds):
        order = LENGTHS if r % 2 == 0 else LENGTHS[::-1]
        for w in workers:
            for length in order:
                results.setdefault((length, w), []).append(measure(roots[length], w, a.model_image_size, seconds))
                load.sample()
                startup, rate = results[(length, w)][-1]
                print(f"round {r}: {length} steps, {w} workers: {rate:.0f} samples/s, start-up {startup:.1f}s",
                      flush=True)

    print(f"\n{'steps/episode':>13} {'workers':>7} {'samples/s':>10} {'start-up s':>10} {'ratio':>6}  "
          f"ratio to 25 steps per round")
    for w in workers:
        for length in LENGTHS:
            runs = results[(length, w)]
            ratios = [run[1] / base[1] for run, base in zip(runs, results[(LENGTHS[0], w)])]
            print(f"{length:>13} {w:>7} {statistics.median(r[1] for r in runs):>10.0f} "
                  f"{statistics.median(r[0] for r in runs):>10.1f} {statistics.median(ratios):>6.2f}  "
                  f"{' '.join(f'{x:.2f}' for x in ratios)}")
    load.sample()
    print(load.describe())


if __name__ == "__main__":
    main()
