"""Generates the simulated tabletop datasets (TFDS, array_record), their prepared copies and statistics,
and the default tokenizer.

Datasets written under ``out_dir``:

- ``tabletop_single_arm`` / ``tabletop_bimanual``: RLDS episodes of the scripted expert
  (vla_jax.sim), OXE step schema, cameras ``observation/image_*`` as JPEG, ``observation/state``.
- ``tabletop_web_vl``: rendered scenes with a caption and question/answer pairs.

Each has ``train`` and ``val`` splits. Both use only ``split="train"`` tasks (held-out task splits
are for closed-loop evaluation); val episodes use other seeds. Then ``out_dir/tokenizer.model`` is
trained from every instruction paraphrase the simulator can produce, plus captions and QA text.
Episodes are simulated and JPEG-encoded in worker processes; each dataset is written to a temp
directory and renamed into place when complete. Then each is prepared (vla_jax/data/prepare.py) into
``out_dir/prepared/<name>`` with its statistics in ``out_dir/stats``: the defaults of configs/mixtures.py,
so the default mixtures train right after generation.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import threading
import time

import numpy as np

from vla_jax.data import builders, prepare
from vla_jax.data.specs import get_spec
from vla_jax.data.tokenizer import CORPUS_FILE, train_tokenizer
from vla_jax.progress import track
from vla_jax.sim import EMBODIMENTS, collect_episode, make_web_example, sample_task, tasks
from vla_jax.sim.grounding_answers import LOCATION_TOKENS
from vla_jax.sim.world import COLOR_NAMES, GRASPABLE_KINDS

ROBOT_DATASETS = {"tabletop_single_arm": "single_arm", "tabletop_bimanual": "bimanual"}
WEB_DATASET = "tabletop_web_vl"
ALL_DATASETS = tuple(ROBOT_DATASETS) + (WEB_DATASET,)
TOKENIZER_FILE = "tokenizer.model"
PREPARED_DIR = "prepared"  # the default config.data.prepared_dir (configs/mixtures.py)
STATS_DIR = "stats"  # the default config.data.stats_dir
DEFAULT_EPISODES = 2000
DEFAULT_WEB_EXAMPLES = 8000
DEFAULT_VOCAB_SIZE = 500
DEFAULT_PERTURB = 0.5  # DART noise of the demonstrations (vla_jax.sim.collect_episode), docs/experiments.md
_VAL_SEED_OFFSET = 5_000_000
_DATASET_SEED_OFFSET = {"tabletop_single_arm": 0, "tabletop_bimanual": 1_000_000, WEB_DATASET: 2_000_000}


def _robot_episode(args):
    embodiment, index, seed, image_size, max_steps, perturb = args
    task = sample_task(np.random.default_rng(seed), split="train")
    episode = collect_episode(embodiment, task, seed=seed, max_steps=max_steps, image_size=image_size, perturb=perturb)
    steps = []
    for step in episode["steps"]:
        obs = {k: (builders.jpeg_bytes(v) if k != "state" else np.asarray(v, np.float32))
               for k, v in step["observation"].items()}
        steps.append({**step, "observation": obs})
    meta = episode["episode_metadata"]
    return index, {
        "steps": steps,
        "episode_metadata": {
            "episode_id": index,
            "seed": seed,
            "task_family": str(meta.get("task_family", task.family)),
            "success": bool(meta.get("success", False)),
            "embodiment": embodiment,
            "perturb_std": np.float32(meta["perturb_std"]),
        },
    }


def _web_example(args):
    index, seed, image_size = args
    ex = make_web_example(np.random.default_rng(seed), image_size=image_size)
    qa = list(ex.get("qa", ()))
    return index, {
        "image": builders.jpeg_bytes(ex["image"]),
        "caption": ex["caption"],
        "qa": {"question": [q for q, _ in qa], "answer": [a for _, a in qa]},
    }


def all_instructions() -> list[str]:
    """Every instruction the simulator can write: all families, paraphrases (held-out ones too) and objects."""
    texts = []
    for family in tasks.FAMILIES:
        for p in range(len(tasks.PARAPHRASES[family])):
            for color in COLOR_NAMES:
                for kind in GRASPABLE_KINDS:
                    containers = COLOR_NAMES if family == "place" else (None,)
                    directions = tuple(tasks.DIRECTIONS) if family == "push" else (None,)
                    for container in containers:
                        for direction in directions:
                            texts.append(tasks.make_task(family, color, kind, container, direction, p).instruction)
    return texts


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def worker_pool(num_workers: int):
    """A spawn process pool of ``num_workers`` (None in-process when <= 1) for :func:`map_items`; SIGTERM
    becomes SystemExit meanwhile, so that the cleanup runs (worker shutdown, temp dir removal)."""
    pool = None
    if num_workers > 1:
        pool = concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn"))
    previous_handler = None
    if threading.current_thread() is threading.main_thread():
        previous_handler = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield pool
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def map_items(pool, fn, items):
    """``fn`` over ``items`` in order, in the pool's workers (or in-process without a pool)."""
    if pool is None:
        return map(fn, items)
    return pool.map(fn, items, chunksize=4)


def _robot_metadata(embodiment) -> dict:
    return {
        "embodiment": embodiment.name,
        "control_hz": embodiment.control_hz,
        "action_dim": embodiment.action_dim,
        "state_dim": embodiment.state_dim,
        "cameras": list(embodiment.camera_names),
        "gripper_dims": [i for i, g in enumerate(embodiment.gripper_dims) if g],
    }


def generate_datasets(
    out_dir: str,
    *,
    episodes_per_embodiment: int = DEFAULT_EPISODES,
    web_examples: int = DEFAULT_WEB_EXAMPLES,
    val_fraction: float = 0.1,
    image_size: int = 96,
    max_steps: int | None = None,
    perturb: float = DEFAULT_PERTURB,
    num_workers: int | None = None,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    if_missing: bool = False,
    seed: int = 0,
    progress: bool = True,
    log=print,
) -> dict:
    """Writes the three tabletop datasets, their prepared copies and statistics, and the tokenizer into
    ``out_dir``; returns a summary dict.

    ``perturb``: DART noise scale of the robot demonstrations (vla_jax.sim.collect_episode); the val
    splits get the same. With ``if_missing``, datasets (and the tokenizer) already complete in ``out_dir``
    are kept as is.
    """
    import tensorflow_datasets as tfds

    out_dir = os.path.abspath(out_dir)  # the prepared copies record their sources as training configs resolve them
    os.makedirs(out_dir, exist_ok=True)
    tfds.disable_progress_bar()
    summary = {"out_dir": out_dir, "datasets": {}, "seconds": {}}
    todo = [n for n in ALL_DATASETS if not (if_missing and builders.is_complete(out_dir, n))]
    tokenizer_path = os.path.join(out_dir, TOKENIZER_FILE)
    need_tokenizer = not (if_missing and os.path.isfile(tokenizer_path)) or bool(todo)
    if not todo and not need_tokenizer:
        if not _prepare(out_dir, num_workers, progress, log):
            log(f"[generate] {out_dir}: all datasets, their prepared copies and the tokenizer exist; "
                "nothing to do (--if_missing)")
            summary["cached"] = True
        return summary
    num_workers = (os.cpu_count() or 1) if num_workers is None else num_workers
    n_val = max(1, round(episodes_per_embodiment * val_fraction))
    n_web_val = max(1, round(web_examples * val_fraction))
    web_texts: list[str] = []
    with worker_pool(num_workers) as pool:
        for name, emb_name in ROBOT_DATASETS.items():
            if name not in todo:
                continue
            embodiment = EMBODIMENTS[emb_name]
            steps = max_steps or embodiment.max_episode_steps
            base = seed * 10_000_000 + _DATASET_SEED_OFFSET[name]

            def split_fn(count, offset, desc, emb_name=emb_name, steps=steps, base=base):
                def gen():
                    items = [(emb_name, i, base + offset + i, image_size, steps, perturb) for i in range(count)]
                    yield from track(map_items(pool, _robot_episode, items), count, desc, unit="episodes",
                                     enabled=progress)

                return gen

            cams = {c: (image_size, image_size) for c in embodiment.camera_names}
            metadata = {
                "episode_id": tfds.features.Scalar(dtype=np.int64),
                "seed": tfds.features.Scalar(dtype=np.int64),
                "task_family": tfds.features.Text(),
                "success": tfds.features.Scalar(dtype=np.bool_),
                "embodiment": tfds.features.Text(),
                "perturb_std": tfds.features.Scalar(dtype=np.float32),
            }
            features = builders.rlds_features(cams, embodiment.state_dim, embodiment.action_dim, metadata,
                                              step_texts=("target_location",))
            start = time.perf_counter()
            builders.write_dataset(
                out_dir, name, features,
                {"train": split_fn(episodes_per_embodiment, 0, f"{name}/train"),
                 "val": split_fn(n_val, _VAL_SEED_OFFSET, f"{name}/val")},
                description=f"vla_jax.sim scripted-expert demonstrations, {emb_name} embodiment (RLDS).",
                metadata={**_robot_metadata(embodiment), "perturb": perturb},
            )
            summary["seconds"][name] = time.perf_counter() - start
            summary["datasets"][name] = {"train": episodes_per_embodiment, "val": n_val}

        if WEB_DATASET in todo:
            base = seed * 10_000_000 + _DATASET_SEED_OFFSET[WEB_DATASET]

            def web_fn(count, offset, desc):
                def gen():
                    items = [(i, base + offset + i, image_size) for i in range(count)]
                    for key, ex in track(map_items(pool, _web_example, items), count, desc, unit="examples",
                                         enabled=progress):
                        web_texts.append(ex["caption"])
                        web_texts.extend(ex["qa"]["question"] + ex["qa"]["answer"])
                        yield key, ex

                return gen

            start = time.perf_counter()
            builders.write_dataset(
                out_dir, WEB_DATASET, builders.web_features(image_size),
                {"train": web_fn(web_examples, 0, f"{WEB_DATASET}/train"),
                 "val": web_fn(n_web_val, _VAL_SEED_OFFSET, f"{WEB_DATASET}/val")},
                description="vla_jax.sim rendered tabletop scenes with captions and question/answer pairs.",
            )
            summary["seconds"][WEB_DATASET] = time.perf_counter() - start
            summary["datasets"][WEB_DATASET] = {"train": web_examples, "val": n_web_val}

    if need_tokenizer:
        corpus = os.path.join(out_dir, CORPUS_FILE)
        texts = all_instructions()
        if web_texts:
            texts += web_texts
        elif os.path.isfile(corpus):
            with open(corpus) as f:
                texts += [line.rstrip("\n") for line in f]
        texts = list(dict.fromkeys(t for t in texts if t))
        tmp = f"{corpus}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write("\n".join(texts) + "\n")
        os.replace(tmp, corpus)
        train_tokenizer(texts, tokenizer_path, vocab_size=vocab_size, symbols=LOCATION_TOKENS, log=log)
    summary["tokenizer"] = tokenizer_path
    _prepare(out_dir, num_workers, progress, log)
    return summary


def _prepare(out_dir: str, num_workers: int | None, progress: bool, log) -> bool:
    """Prepared copies (``out_dir/prepared/<name>``) and statistics (``out_dir/stats``) of the datasets
    that are not up to date, with their own specs; True if any was prepared."""
    done = [prepare.prepare_dataset(os.path.join(out_dir, name), os.path.join(out_dir, PREPARED_DIR, name), name,
                                    get_spec(name), stats_dir=os.path.join(out_dir, STATS_DIR),
                                    num_workers=num_workers, progress=progress, log=log)
            for name in ALL_DATASETS]
    return any(done)
