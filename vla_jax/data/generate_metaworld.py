"""Generates Meta-World scripted demonstrations (RLDS, TFDS array_record), their prepared copy and statistics,
and a tokenizer that also covers the Meta-World instructions.

``metaworld_mt50`` / ``metaworld_mt10`` under ``out_dir``: ``episodes_per_task`` successful episodes of
Meta-World's scripted policy per task (small Gaussian action noise; a failed attempt is replaced by one
from the next seed), ``train`` and ``val`` splits with disjoint seeds, training paraphrases only (held-out
ones are for closed-loop evaluation). Step schema as the tabletop datasets (vla_jax/data/generate.py)
with cameras ``observation/corner2`` and ``observation/gripperPOV`` and a 4-D state and action.
``out_dir/tokenizer_metaworld.model`` is trained on the tabletop corpus (every tabletop instruction, plus
``out_dir``'s web-data corpus when the tabletop data is there) and every Meta-World instruction, so one
tokenizer serves the Meta-World mixtures alone and co-trained (configs/mixtures.py). Episodes are simulated
and JPEG-encoded in worker processes and written by the tabletop generator's writer.
"""

from __future__ import annotations

import os
import time

import numpy as np

from vla_jax.data import builders, prepare
from vla_jax.data.generate import (
    DEFAULT_VOCAB_SIZE,
    PREPARED_DIR,
    STATS_DIR,
    all_instructions,
    map_items,
    worker_pool,
)
from vla_jax.data.specs import get_spec
from vla_jax.data.tokenizer import CORPUS_FILE, train_tokenizer
from vla_jax.progress import track
from vla_jax.sim.grounding_answers import LOCATION_TOKENS
from vla_jax.sim.metaworld import tasks as mw_tasks

SUITES = tuple(mw_tasks.TASK_SETS)  # the dataset of suite X is named X
SPEC = "metaworld"
TOKENIZER_FILE = "tokenizer_metaworld.model"
DEFAULT_EPISODES_PER_TASK = 50
DEFAULT_NOISE = 0.1
DEFAULT_IMAGE_SIZE = 64
MAX_STEPS = 200
_MAX_ATTEMPTS = 20
_SEED_BASE = 30_000_000  # disjoint from the tabletop datasets' seeds
_TASK_STRIDE = 100_000
_VAL_OFFSET = 50_000
_RETRY_STRIDE = 1_000
_WORKER_ENVS: dict = {}  # image size -> this process's env, kept across episodes (a task switch costs ~0.7 s)


def _episode(args):
    """(key, name, seed, image_size, noise) -> (key, encoded episode), the first success among seeds
    seed, seed + _RETRY_STRIDE, ..."""
    from vla_jax.sim.metaworld.demonstrations import collect_episode
    from vla_jax.sim.metaworld.env import MetaWorldEnv

    key, name, seed, image_size, noise = args
    env = _WORKER_ENVS.setdefault(image_size, MetaWorldEnv("sawyer", image_size))
    for attempt in range(_MAX_ATTEMPTS):
        s = seed + attempt * _RETRY_STRIDE
        task = mw_tasks.sample_task(np.random.default_rng(s), name, "train")
        episode = collect_episode(task, s, MAX_STEPS, image_size=image_size, noise=noise, env=env)
        if episode["episode_metadata"]["success"]:
            break
    else:
        raise RuntimeError(f"the scripted {name} policy failed {_MAX_ATTEMPTS} times in a row from seed {seed}")
    steps = [{**step, "observation": {k: (builders.jpeg_bytes(v) if k != "state" else np.asarray(v, np.float32))
                                      for k, v in step["observation"].items()}} for step in episode["steps"]]
    return key, {"steps": steps, "episode_metadata": {"episode_id": key, "seed": s, "task_family": name,
                                                      "success": True, "attempts": attempt + 1}}


def _tokenizer_corpus(out_dir: str) -> list[str]:
    texts = all_instructions()
    corpus = os.path.join(out_dir, CORPUS_FILE)
    if os.path.isfile(corpus):
        with open(corpus) as f:
            texts += [line.rstrip("\n") for line in f]
    return list(dict.fromkeys(t for t in texts + mw_tasks.all_instructions() if t))


def generate_metaworld(out_dir: str, suite: str = "metaworld_mt50", *,
                       episodes_per_task: int = DEFAULT_EPISODES_PER_TASK, val_fraction: float = 0.1,
                       image_size: int = DEFAULT_IMAGE_SIZE, noise: float = DEFAULT_NOISE,
                       num_workers: int | None = None, vocab_size: int = DEFAULT_VOCAB_SIZE + 300,
                       tasks: tuple[str, ...] | None = None, if_missing: bool = False, seed: int = 0,
                       progress: bool = True, log=print) -> dict:
    """Writes dataset ``suite`` (its tasks, or ``tasks``), its prepared copy and statistics, and
    ``tokenizer_metaworld.model`` into ``out_dir``; returns a summary dict (see the module doc)."""
    import tensorflow_datasets as tfds

    if suite not in SUITES:
        raise ValueError(f"unknown Meta-World suite {suite!r}; choose from {', '.join(SUITES)}")
    names = tuple(tasks) if tasks else mw_tasks.TASK_SETS[suite]
    out_dir = os.path.abspath(out_dir)  # the prepared copy records its source as training configs resolve it
    os.makedirs(out_dir, exist_ok=True)
    tfds.disable_progress_bar()
    summary = {"out_dir": out_dir, "datasets": {}, "seconds": {}}
    n_val = max(1, round(episodes_per_task * val_fraction))
    num_workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    if not (if_missing and builders.is_complete(out_dir, suite)):
        def split_fn(count, offset, desc):
            def gen():
                items = [(i * count + j, name, seed * 10_000_000 + _SEED_BASE + i * _TASK_STRIDE + offset + j,
                          image_size, noise) for i, name in enumerate(names) for j in range(count)]
                yield from track(map_items(pool, _episode, items), len(items), desc, unit="episodes", enabled=progress)

            return gen

        metadata = {"episode_id": tfds.features.Scalar(dtype=np.int64), "seed": tfds.features.Scalar(dtype=np.int64),
                    "task_family": tfds.features.Text(), "success": tfds.features.Scalar(dtype=np.bool_),
                    "attempts": tfds.features.Scalar(dtype=np.int64)}
        features = builders.rlds_features({"corner2": (image_size, image_size), "gripperPOV": (image_size, image_size)},
                                          4, 4, metadata)
        start = time.perf_counter()
        with worker_pool(num_workers) as pool:
            builders.write_dataset(
                out_dir, suite, features,
                {"train": split_fn(episodes_per_task, 0, f"{suite}/train"),
                 "val": split_fn(n_val, _VAL_OFFSET, f"{suite}/val")},
                description=f"Meta-World {suite[10:].upper()} scripted-policy demonstrations with language (RLDS).",
                metadata={"embodiment": "sawyer", "control_hz": 80.0, "action_dim": 4, "state_dim": 4,
                          "cameras": ["corner2", "gripperPOV"], "gripper_dims": [3], "tasks": list(names),
                          "noise": noise, "max_steps": MAX_STEPS})
        summary["seconds"][suite] = time.perf_counter() - start
        summary["datasets"][suite] = {"train": episodes_per_task * len(names), "val": n_val * len(names)}
    tokenizer = os.path.join(out_dir, TOKENIZER_FILE)
    if not (if_missing and os.path.isfile(tokenizer)):
        train_tokenizer(_tokenizer_corpus(out_dir), tokenizer, vocab_size=vocab_size, symbols=LOCATION_TOKENS, log=log)
    summary["tokenizer"] = tokenizer
    prepare.prepare_dataset(os.path.join(out_dir, suite), os.path.join(out_dir, PREPARED_DIR, suite), suite,
                            get_spec(SPEC), stats_dir=os.path.join(out_dir, STATS_DIR), num_workers=num_workers,
                            progress=progress, log=log)
    return summary
