"""Normalization statistics for robot datasets: compute, cache, load, combine, apply.

Statistics cover the ``train`` split and are read from the records' state and
action floats only (images are never decoded). They are stored as JSON at
``<stats_dir>/<dataset>-<fingerprint>.json``; the fingerprint hashes the dataset's
identity (resolved path, name, version, split sizes), the content of the split's
record files (:func:`content_digest`) and the standardization spec, so a
regenerated dataset or a changed spec makes the cache stale and :func:`load_stats`
says how to refresh it.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable

import numpy as np

from vla_jax.data import sources
from vla_jax.data.errors import DataError

STAT_KEYS = ("mean", "std", "min", "max", "q01", "q99")
QUANTILE_SAMPLE_CAP = 2_000_000  # rows kept for quantiles; beyond this a uniform subsample is used
_EPS = 1e-8
FINGERPRINT_FORMAT = 2  # what dataset_fingerprint covers; stats files of another format read as stale
HEAD_BYTES = 64 * 1024  # read from the start of each record file by content_digest
TAIL_BYTES = 192 * 1024  # read from the end: array_record's index, postscript and block padding
_STALE_REASON = "other dataset contents, another spec or an older fingerprint format"


def content_digest(files: Iterable[str | os.PathLike]) -> str:
    """Hash of the record files' contents, from a bounded read of each (no record is parsed or decoded).

    Per file: its name, size, first :data:`HEAD_BYTES` and last :data:`TAIL_BYTES`. The tail of an
    array_record file holds its index (the offset of every record, i.e. every compressed record
    size, for shards of up to a few thousand records) and its last records, the head its first
    records, so regenerated episodes change the digest even when the counts stay the same.
    """
    digest = hashlib.sha256()
    for file in files:
        file = os.fspath(file)
        size = os.path.getsize(file)
        digest.update(f"{os.path.basename(file)}:{size}:".encode())
        with open(file, "rb") as f:
            digest.update(f.read(HEAD_BYTES))
            if size > HEAD_BYTES:
                f.seek(max(size - TAIL_BYTES, HEAD_BYTES))
                digest.update(f.read())
    return digest.hexdigest()


def dataset_fingerprint(path: str, dataset: str, spec, split: str = "train") -> str:
    """12 hex digits naming the statistics of ``split``: dataset identity, ``split``'s contents, spec.

    Covers the resolved path, TFDS name and version, every split's size, ``split``'s serialized size
    (dataset_info.json) and :func:`content_digest` of its files; cheap enough for every trainer start.
    """
    builder = sources.open_builder(path, dataset)
    info = builder.info
    split_info = info.splits[split] if split in info.splits else None
    files = split_info.filepaths if split_info is not None else []
    payload = {
        "format": FINGERPRINT_FORMAT,
        "path": os.path.abspath(sources.resolve_dataset_dir(path, dataset)),
        "name": info.name,
        "version": str(info.version),
        "split": split,
        "splits": {k: int(v.num_examples) for k, v in sorted(info.splits.items())},
        "num_bytes": int(split_info.num_bytes) if split_info is not None else 0,
        "content": content_digest(sorted(files, key=os.fspath)),
        "spec": spec.fingerprint(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def stats_path(stats_dir: str, dataset: str, fingerprint: str) -> str:
    return os.path.join(stats_dir, f"{dataset}-{fingerprint}.json")


def _summary(values: np.ndarray, quantile_rows: np.ndarray) -> dict:
    values = values.astype(np.float64)
    return {
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "q01": np.quantile(quantile_rows, 0.01, axis=0).tolist(),
        "q99": np.quantile(quantile_rows, 0.99, axis=0).tolist(),
    }


def compute_stats(path: str, dataset: str, spec, split: str = "train", log=print) -> dict:
    """Reads state and action of every step of ``split``; returns the stats dict (not saved)."""
    reader = sources.RecordReader(path, split, dataset)
    start = time.perf_counter()
    actions, states = [], []
    for index in range(len(reader)):
        episode = sources.Episode(reader.read(index), dataset)
        actions.append(sources.for_dataset(dataset, spec.action_rows, episode.column, episode.num_steps))
        states.append(sources.for_dataset(dataset, spec.state_rows, episode.column, episode.num_steps))
    return summarize(dataset, spec, split, actions, states, time.perf_counter() - start, log)


def summarize(dataset: str, spec, split: str, actions: list[np.ndarray], states: list[np.ndarray], seconds: float,
              log=print) -> dict:
    """The stats dict of ``split`` from its episodes' actions ([T_e, A] each) and states ([T_e, S] each), in
    episode order; ``seconds``: how long reading them took (logged)."""
    lengths = [len(a) for a in actions]
    if not lengths:
        raise DataError(f"dataset '{dataset}': split '{split}' is empty, cannot compute statistics")
    action, state = np.concatenate(actions), np.concatenate(states)
    for what, values, dim in (("action", action, spec.action_dim), ("state", state, spec.state_dim)):
        if values.shape[-1] != dim:
            raise DataError(f"dataset '{dataset}': {what} is {values.shape[-1]}-D but spec '{spec.name}' expects {dim}-D")
    rows = np.arange(len(action))
    if len(rows) > QUANTILE_SAMPLE_CAP:
        rows = np.sort(np.random.default_rng(0).choice(len(rows), QUANTILE_SAMPLE_CAP, replace=False))
    num_transitions = int(sum(lengths))
    log(
        f"[stats] {dataset}: {len(lengths)} episodes, {num_transitions} transitions in {seconds:.2f}s "
        f"({num_transitions / max(seconds, 1e-9):,.0f} transitions/s, state+action only, no image decoding)"
    )
    return {
        "dataset": dataset,
        "spec": spec.name,
        "split": split,
        "num_transitions": num_transitions,
        "num_trajectories": len(lengths),
        "action": _summary(action, action[rows]),
        "state": _summary(state, state[rows]),
        "episode_lengths": [int(n) for n in lengths],
        "transitions_per_second": num_transitions / max(seconds, 1e-9),
    }


# Dataset kind (config.data.datasets.<name>.kind) -> (fingerprint(path, dataset, spec, split) -> str,
# compute(path, dataset, spec, split, log) -> stats dict). Other modules register their kinds (vla_jax/data/lerobot.py).
STATS_READERS: dict[str, tuple[Callable, Callable]] = {"robot": (dataset_fingerprint, compute_stats)}


def _readers(kind: str) -> tuple[Callable, Callable]:
    if kind not in STATS_READERS:
        raise DataError(f"no normalization statistics for dataset kind {kind!r} (kinds with statistics: "
                        f"{sorted(STATS_READERS)})")
    return STATS_READERS[kind]


def save_stats(stats: dict, stats_dir: str, fingerprint: str) -> str:
    os.makedirs(stats_dir, exist_ok=True)
    path = stats_path(stats_dir, stats["dataset"], fingerprint)
    stats = dict(stats, fingerprint=fingerprint)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(stats, f)
    os.replace(tmp, path)
    return path


def stale_stats_files(stats_dir: str, dataset: str, fingerprint: str) -> list[str]:
    """Stats files of ``dataset`` in ``stats_dir`` made for another fingerprint (other content, spec or
    format), the most recently written first."""
    current = stats_path(stats_dir, dataset, fingerprint)
    files = [f for f in glob.glob(stats_path(stats_dir, dataset, "?" * len(fingerprint))) if f != current]
    return sorted(files, key=os.path.getmtime, reverse=True)


def ensure_stats(path: str, dataset: str, spec, stats_dir: str, *, if_missing: bool = True, log=print,
                 kind: str = "robot") -> str:
    """Computes and saves stats unless a fresh file exists (with ``if_missing``); returns its path. ``kind``: the
    dataset kind (:data:`STATS_READERS`)."""
    fingerprint_fn, compute_fn = _readers(kind)
    fingerprint = fingerprint_fn(path, dataset, spec)
    out = stats_path(stats_dir, dataset, fingerprint)
    if if_missing and os.path.isfile(out):
        log(f"[stats] {dataset}: up to date ({out})")
        return out
    stale = stale_stats_files(stats_dir, dataset, fingerprint)
    if stale and not os.path.isfile(out):
        log(f"[stats] {dataset}: {os.path.basename(stale[0])} is stale ({_STALE_REASON}), recomputing")
    stats = compute_fn(path, dataset, spec, log=log)
    out = save_stats(stats, stats_dir, fingerprint)
    log(f"[stats] {dataset}: wrote {out}")
    return out


def load_stats(path: str, dataset: str, spec, stats_dir: str, kind: str = "robot") -> dict:
    """Loads the stats of ``dataset`` (of dataset ``kind``); one clear line if missing or stale."""
    fingerprint = _readers(kind)[0](path, dataset, spec)
    file = stats_path(stats_dir, dataset, fingerprint)
    hint = "run `python tools/compute_stats.py --config=<your training config> --if_missing`"
    if not os.path.isfile(file):
        stale = stale_stats_files(stats_dir, dataset, fingerprint)
        if stale:
            raise DataError(
                f"dataset '{dataset}': normalization stats are stale ({os.path.basename(stale[0])} was computed "
                f"for {_STALE_REASON}; expected {os.path.basename(file)}); {hint}"
            )
        raise DataError(f"dataset '{dataset}': normalization stats {file} are missing; {hint}")
    with open(file) as f:
        return json.load(f)


def combine_stats(stats_list: list[dict]) -> dict:
    """Transition-weighted combination for datasets that share one embodiment's normalization.

    mean/std/min/max are exact; q01/q99 are the transition-weighted mean of the per-dataset
    quantiles (an approximation; exact quantiles would need every value again).
    """
    if len(stats_list) == 1:  # drop the per-episode index: callers store this dict (e.g. in checkpoints)
        return {k: v for k, v in stats_list[0].items() if k != "episode_lengths"}
    weights = np.asarray([s["num_transitions"] for s in stats_list], dtype=np.float64)
    weights = weights / weights.sum()
    out = {
        "dataset": "+".join(s["dataset"] for s in stats_list),
        "num_transitions": int(sum(s["num_transitions"] for s in stats_list)),
        "num_trajectories": int(sum(s["num_trajectories"] for s in stats_list)),
    }
    for what in ("action", "state"):
        dims = {len(s[what]["mean"]) for s in stats_list}
        if len(dims) != 1:
            raise DataError(f"combine_stats: datasets {out['dataset']} have different {what} dims {sorted(dims)}")
        get = {k: np.asarray([s[what][k] for s in stats_list], dtype=np.float64) for k in STAT_KEYS}
        mean = (weights[:, None] * get["mean"]).sum(0)
        second = (weights[:, None] * (get["std"] ** 2 + get["mean"] ** 2)).sum(0)
        out[what] = {
            "mean": mean.tolist(),
            "std": np.sqrt(np.maximum(second - mean**2, 0.0)).tolist(),
            "min": get["min"].min(0).tolist(),
            "max": get["max"].max(0).tolist(),
            "q01": (weights[:, None] * get["q01"]).sum(0).tolist(),
            "q99": (weights[:, None] * get["q99"]).sum(0).tolist(),
        }
    return out


class Normalizer:
    """Normalizes / unnormalizes one quantity (action or state) of one dataset.

    ``method``: "bounds_q99" maps [q01, q99] to [-1, 1] and clips (dims with q01 == q99 map to 0);
    "normal" is (x - mean) / std; "none" is identity. Dims where ``mask`` is False (gripper-like)
    pass through unchanged in both directions.
    """

    def __init__(self, block: dict, method: str, mask=None):
        self.method = method
        dim = len(block["mean"])
        self.mask = np.ones(dim, bool) if mask is None else np.asarray(mask, bool)
        if method == "bounds_q99":
            self.low = np.asarray(block["q01"], np.float32)
            self.high = np.asarray(block["q99"], np.float32)
            self.degenerate = (self.high - self.low) < _EPS
        elif method == "normal":
            self.mean = np.asarray(block["mean"], np.float32)
            self.std = np.asarray(block["std"], np.float32)
        elif method != "none":
            raise DataError(f"unknown normalization method {method!r}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.method == "bounds_q99":
            span = np.where(self.degenerate, 1.0, self.high - self.low)
            y = np.clip(2.0 * (x - self.low) / span - 1.0, -1.0, 1.0)
            y = np.where(self.degenerate, 0.0, y)
        elif self.method == "normal":
            y = (x - self.mean) / (self.std + _EPS)
        else:
            y = x
        return np.where(self.mask, y, x).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, np.float32)
        if self.method == "bounds_q99":
            x = (y + 1.0) / 2.0 * (self.high - self.low) + self.low
            x = np.where(self.degenerate, self.low, x)
        elif self.method == "normal":
            x = y * (self.std + _EPS) + self.mean
        else:
            x = y
        return np.where(self.mask, x, y).astype(np.float32)


def normalize(x, block: dict, method: str, mask=None) -> np.ndarray:
    return Normalizer(block, method, mask)(x)


def unnormalize(y, block: dict, method: str, mask=None) -> np.ndarray:
    return Normalizer(block, method, mask).inverse(y)
