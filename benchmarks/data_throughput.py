"""Samples/s of the full training input pipeline (read + decode + augment + tokenize + mix + batch).

    python benchmarks/data_throughput.py --config=configs/pretrain.py:debug [--workers=0,1,2] [--seconds=10]

Each row builds a fresh iterator with ``config.data.num_workers`` set, discards the first batches
(worker start-up), then counts examples delivered in ``--seconds``.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from conditions import LoadWatch, machine  # noqa: E402
from vla_jax.platform import jax_defaults  # noqa: E402

jax_defaults()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vla_jax.config import flags_parser  # noqa: E402
from vla_jax.data import make_train_iterator  # noqa: E402

config_flags.DEFINE_config_file("config", None, "training config, e.g. configs/pretrain.py:debug", lock_config=False)
flags.DEFINE_list("workers", ["0", "1", "2"], "values of config.data.num_workers to measure")
flags.DEFINE_float("seconds", 10.0, "measuring time per row")
flags.DEFINE_integer("warmup_batches", 3, "batches discarded before timing")


def measure(config, num_workers: int, seconds: float, warmup: int) -> dict:
    config = config.copy_and_resolve_references()
    config.data.num_workers = num_workers
    start = time.perf_counter()
    it = make_train_iterator(config, process_index=0, process_count=1)
    for _ in range(warmup):
        next(it)
    startup = time.perf_counter() - start
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        count += len(next(it)["source"])
    elapsed = time.perf_counter() - t0
    it.close()
    return {"workers": num_workers, "samples_per_s": count / elapsed, "startup_s": startup, "samples": count}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    config = flags.FLAGS.config
    m = config.model
    load = LoadWatch()
    print(f"machine: {machine('grain')}; "
          f"batch {config.batch_size}, {m.num_cameras} cameras at {m.image_size} px, horizon {m.action_horizon}, "
          f"read_threads {config.data.read_threads}, ops {list(config.data.train_ops)}")
    print(f"{'workers':>7} {'samples/s':>10} {'startup s':>10} {'samples':>8}")
    for w in flags.FLAGS.workers:
        r = measure(config, int(w), flags.FLAGS.seconds, flags.FLAGS.warmup_batches)
        print(f"{r['workers']:>7} {r['samples_per_s']:>10.0f} {r['startup_s']:>10.1f} {r['samples']:>8}", flush=True)
        load.sample()
    print(load.describe())


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=flags_parser)
