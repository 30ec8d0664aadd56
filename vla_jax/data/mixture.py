"""The grain input pipeline: per-dataset sources, host sharding, mixing, transforms, batching.

Train pipeline (per process)::

    for each dataset with weight > 0:
        source: robot = one element per (episode, step) transition; web = one per example,
                built from this process's shard of the episodes / examples only (disjoint across processes)
        .shuffle(seed_i)
    MapDataset.mix(datasets, weights) .shuffle(seed) .repeat()
        .random_map(SampleTransform)          # decode + ops + normalize + tokenize; rng per example index
        .to_iter_dataset(ReadOptions(read_threads)) .batch(batch_size // process_count)
        .mp_prefetch(num_workers)             # only if num_workers > 0

Everything up to ``to_iter_dataset`` is index-based and deterministic, so the iterator's
``get_state()`` / ``set_state()`` replay exactly the same batches.
"""

from __future__ import annotations

import atexit
import dataclasses
import weakref
from typing import Callable, Mapping, Sequence

import grain
import numpy as np
from absl import flags, logging

from vla_jax.data import norm_stats as stats_lib, sources
from vla_jax.data.errors import DataError
from vla_jax.data.settings import DataSettings, check_on_disk, dropped_line, read_settings
from vla_jax.data.specs import RobotSpec, get_spec
from vla_jax.data.tokenizer import Tokenizer, check_tokenizer
from vla_jax.data.transforms import (
    OpContext,
    RobotSourceInfo,
    SampleTransform,
    WebSourceInfo,
    build_ops,
    finalize_batch,
)

SourceInfo = RobotSourceInfo | WebSourceInfo

# ----------------------------------------------------------------------------- sources


class RobotTransitions:
    """grain random-access source: element i = raw sample of one (episode, step) transition."""

    def __init__(self, reader, spec, episode_ids, lengths, horizon: int, num_cameras: int, source: int,
                 grounding: bool = False):
        self.reader = reader
        self.grounding = grounding
        self.spec = spec
        self.episode_ids = np.asarray(episode_ids, np.int64)
        self.lengths = np.asarray(lengths, np.int64)
        self.ends = np.cumsum(self.lengths)
        self.horizon = horizon
        self.num_cameras = num_cameras
        self.source = source

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def locate(self, index: int) -> tuple[int, int]:
        """(episode record index, step) of transition ``index``."""
        k = int(np.searchsorted(self.ends, index, side="right"))
        start = int(self.ends[k - 1]) if k else 0
        return int(self.episode_ids[k]), int(index - start)

    def __getitem__(self, index: int) -> dict:
        episode_id, t = self.locate(int(index) % len(self))
        episode = sources.Episode(self.reader.read(episode_id), self.reader.dataset)
        stop = min(t + self.horizon, episode.num_steps)
        keys = list(self.spec.image_keys[: self.num_cameras])
        raw = {
            "source": self.source,
            "images": [episode.step_bytes(k, t) if k is not None else None for k in keys],
            "state": self.spec.state_rows(episode.column, episode.num_steps, t, t + 1)[0],
            "actions": self.spec.action_rows(episode.column, episode.num_steps, t, stop),
            "num_steps": stop - t,
            "instruction": self.spec.instruction(episode.column, episode.num_steps, t),
        }
        if self.grounding:
            raw["grounding"] = episode.step_text(self.spec.grounding_key, t)
        return raw


class WebExamples:
    """grain random-access source: element i = raw web vision-language example."""

    def __init__(self, reader, spec, example_ids, source: int):
        self.reader = reader
        self.spec = spec
        self.example_ids = np.asarray(example_ids, np.int64)
        self.source = source

    def __len__(self) -> int:
        return len(self.example_ids)

    def __getitem__(self, index: int) -> dict:
        fmap = self.reader.read(int(self.example_ids[int(index) % len(self)]))
        name, spec = self.reader.dataset, self.spec
        raw = {"source": self.source, "images": [sources.feature_list(fmap, spec.image_key, name)[0]]}
        if spec.caption_key:
            raw["caption"] = sources.to_text(sources.feature_list(fmap, spec.caption_key, name)[0])
        if spec.question_key and spec.answer_key:
            questions = sources.feature_list(fmap, spec.question_key, name)
            answers = sources.feature_list(fmap, spec.answer_key, name)
            raw["qa"] = [(sources.to_text(q), sources.to_text(a)) for q, a in zip(questions, answers)]
        return raw


# ----------------------------------------------------------------------------- building blocks


@dataclasses.dataclass
class SourceEntry:
    name: str
    kind: str
    source: object  # RobotTransitions | WebExamples
    info: object  # RobotSourceInfo | WebSourceInfo
    size: int  # transitions / examples in the whole split (all processes)


def dataset_stats(settings: DataSettings, name: str) -> tuple[dict, dict]:
    """(own stats, stats used for normalization = combined over the norm group) of a robot dataset."""
    members = settings.norm_group_members(name)
    loaded = []
    for member in members:
        ds = settings.datasets[member]
        loaded.append(stats_lib.load_stats(ds.dir, member, get_spec(ds.spec, member), settings.stats_dir, ds.kind))
    own = loaded[members.index(name)]
    return own, stats_lib.combine_stats(loaded)


def robot_source_info(spec: RobotSpec, stats: dict) -> RobotSourceInfo:
    """Normalizers and dims of a robot dataset's samples; ``stats``: its norm group's combined statistics
    (:func:`dataset_stats`)."""
    return RobotSourceInfo(
        action_norm=stats_lib.Normalizer(stats["action"], spec.action_normalization, spec.normalize_mask("action")),
        state_norm=stats_lib.Normalizer(stats["state"], spec.state_normalization, spec.normalize_mask("state")),
        action_dim=spec.action_dim,
        state_dim=spec.state_dim,
        translation_dims=spec.action_translation_dims,
    )


def _shard(ids: np.ndarray, name: str, process_index: int, process_count: int) -> np.ndarray:
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index={process_index} must be in [0, process_count={process_count})")
    shard = ids[process_index::process_count]
    if len(shard) == 0:
        raise DataError(
            f"dataset '{name}': {len(ids)} records cannot be sharded over {process_count} processes "
            f"(process {process_index} gets none)"
        )
    return shard


# Robot dataset kinds whose sources other modules build (they register here: vla_jax/data/lerobot.py). Each is
# called as build_source below and returns a robot SourceEntry.
ROBOT_SOURCE_KINDS: dict[str, Callable[..., SourceEntry]] = {}


def build_source(
    settings: DataSettings, name: str, source_index: int, *, split: str, process_index: int = 0,
    process_count: int = 1, max_records: int | None = None,
) -> SourceEntry:
    """One dataset's source for this process's shard, validated against its spec (one-line errors)."""
    ds = settings.datasets[name]
    if ds.kind in ROBOT_SOURCE_KINDS:
        return ROBOT_SOURCE_KINDS[ds.kind](settings, name, source_index, split=split, process_index=process_index,
                                           process_count=process_count, max_records=max_records)
    spec = get_spec(ds.spec, name)
    dims = settings.dims
    reader = sources.RecordReader(ds.dir, split, name)
    ids = np.arange(len(reader) if max_records is None else min(len(reader), max_records))
    if len(ids) == 0:
        raise DataError(f"dataset '{name}': split '{split}' is empty")
    shard = _shard(ids, name, process_index, process_count)
    if ds.kind == "web":
        fmap = reader.read(int(shard[0]))
        for key in (spec.image_key, spec.caption_key, spec.question_key, spec.answer_key):
            if key:
                sources.feature_list(fmap, key, name)  # raises a one-line DataError if missing
        return SourceEntry(name, "web", WebExamples(reader, spec, shard, source_index),
                           WebSourceInfo(caption_prompt=spec.caption_prompt), len(ids))
    episode = sources.Episode(reader.read(int(shard[0])), name)
    sources.check_robot_layout(episode, spec, dims.max_action_dim, dims.max_state_dim)
    if ds.grounding and not episode.has(spec.grounding_key):
        raise DataError(f"dataset '{name}': grounding text '{spec.grounding_key}' is missing from the steps; "
                        "regenerate the data (python tools/generate_data.py) or set "
                        f"config.data.datasets.{name}.grounding=False")
    own, group = dataset_stats(settings, name)
    if split == ds.train_split and max_records is None:
        lengths_all = np.asarray(own["episode_lengths"], np.int64)
        if len(lengths_all) != len(reader):
            raise DataError(f"dataset '{name}': stats list {len(lengths_all)} episodes but the split has {len(reader)}; "
                            "run `python tools/compute_stats.py --config=<your training config>`")
        lengths = lengths_all[shard]
    else:
        lengths = sources.episode_lengths(reader, shard)
    info = robot_source_info(spec, group)
    source = RobotTransitions(reader, spec, shard, lengths, dims.action_horizon, dims.num_cameras, source_index,
                              grounding=ds.grounding)
    size = int(own["num_transitions"]) if split == ds.train_split and max_records is None else len(source)
    return SourceEntry(name, "robot", source, info, size)


def load_tokenizer(settings: DataSettings) -> Tokenizer:
    tokenizer = Tokenizer(settings.tokenizer)
    check_tokenizer(tokenizer, settings.vocab_size, settings.action_head, settings.required_tokens,
                    exact_vocab=settings.exact_vocab)
    return tokenizer


def mixture_weights(settings: DataSettings, sizes: dict[str, int]) -> dict[str, float]:
    """Effective sampling shares (sum to 1) of the datasets with weight > 0."""
    weights = {n: w * (sizes[n] if settings.balance_by_size else 1.0) for n, w in settings.mixture.items() if w > 0}
    total = sum(weights.values())
    if total <= 0:
        raise DataError(f"config.data.mixture weights {settings.mixture} sum to zero after balance_by_size")
    return {n: w / total for n, w in weights.items()}


def source_index(settings: DataSettings, name: str) -> int:
    """The ``batch["source"]`` value of dataset ``name``: its position in ``config.data.mixture`` (0 when
    the mixture does not name it)."""
    names = list(settings.mixture)
    return names.index(name) if name in names else 0


def sample_transform(settings: DataSettings, infos: Mapping[int, SourceInfo], tokenizer: Tokenizer,
                     ops_texts: Sequence[str]) -> SampleTransform:
    """The per-example transform (raw sample -> batch-format example) for the sources ``infos``
    ({``batch["source"]`` value: source info}) with the image ops ``ops_texts``; every other source
    value of the mixture has no info."""
    size = max([len(settings.mixture)] + [i + 1 for i in infos])
    ops = build_ops(ops_texts, OpContext(settings.dims.image_size, settings.dims.num_cameras))
    return SampleTransform(settings.dims, tokenizer, [infos.get(i) for i in range(size)], ops,
                           settings.prompt_format)


def dataset_examples(settings: DataSettings, name: str, tokenizer: Tokenizer, *, split: str | None = None,
                     seed: int = 0, max_records: int | None = None) -> tuple[SourceEntry, grain.MapDataset]:
    """One dataset's ``split`` (default: its ``eval_split``) as deterministic examples (evaluation ops):
    (its :class:`SourceEntry`, a grain ``MapDataset`` whose element i is transition / example i in record
    order, transformed with the augmentation rng of ``seed``). ``max_records``: only the first episodes /
    examples."""
    index = source_index(settings, name)
    entry = build_source(settings, name, index, split=split or settings.datasets[name].eval_split,
                         max_records=max_records)
    transform = sample_transform(settings, {index: entry.info}, tokenizer, settings.eval_ops)
    return entry, grain.MapDataset.source(entry.source).random_map(transform, seed=seed)


def _ensure_absl_flags_parsed():
    """grain's multiprocessing reads absl flags; outside an absl app (tests, notebooks) use their defaults."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _batch_fn(examples):
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


# ----------------------------------------------------------------------------- public API


class DataIterator:
    """The training iterator: numpy batches, ``get_state()`` / ``set_state()`` (JSON-serializable dicts,
    exact replay) and ``close()``. Batches from worker processes are copied out of shared memory, and
    worker processes are stopped at interpreter exit if ``close()`` was not called."""

    _it = None

    def __init__(self, iterator):
        self._it = iterator
        atexit.register(_close_weak, weakref.ref(self))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._it is None:
            raise StopIteration
        batch = next(self._it)
        return finalize_batch({k: v if type(v) is np.ndarray else np.array(v) for k, v in batch.items()})

    def get_state(self) -> dict:
        return self._it.get_state()

    def set_state(self, state: dict) -> None:
        self._it.set_state(state)

    def close(self) -> None:
        if self._it is not None:
            it, self._it = self._it, None
            it.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _close_weak(ref):
    it = ref()
    if it is not None:
        it.close()


def make_train_iterator(config, *, process_index: int = 0, process_count: int = 1):
    """Infinite :class:`DataIterator` of numpy batches (batch.py format) of ``config.batch_size // process_count``
    examples, reading only this process's shard of every dataset.

    ``get_state()`` / ``set_state(state)`` replay exactly (each process checkpoints its own state;
    keep ``config.data.num_workers`` fixed across a restore); ``close()`` stops worker processes.
    """
    settings = read_settings(config)
    check_on_disk(settings)
    if settings.dropped:
        logging.warning(dropped_line(settings))
    if settings.batch_size % process_count:
        raise DataError(f"config.batch_size={settings.batch_size} is not divisible by process_count={process_count}")
    tokenizer = load_tokenizer(settings)
    names = list(settings.mixture)
    entries = {}
    for index, name in enumerate(names):
        if settings.mixture[name] > 0:
            entries[index] = build_source(settings, name, index, split=settings.datasets[name].train_split,
                                          process_index=process_index, process_count=process_count)
    shares = mixture_weights(settings, {entries[i].name: entries[i].size for i in entries})
    seed = settings.seed
    datasets = [
        grain.MapDataset.source(entries[i].source).shuffle(seed=(seed * 1_000_003 + 7919 * (i + 1)) % 2**32)
        for i in entries
    ]
    weights = [shares[entries[i].name] for i in entries]
    ds = datasets[0] if len(datasets) == 1 else grain.MapDataset.mix(datasets, weights)
    ds = ds.shuffle(seed=seed % 2**32).repeat()
    transform = sample_transform(settings, {i: entry.info for i, entry in entries.items()}, tokenizer,
                                 settings.train_ops)
    ds = ds.random_map(transform, seed=(seed + 1) % 2**32)
    per_process = settings.batch_size // process_count
    # Elements read ahead per process (one batch, bounded: 224-px 3-camera examples are ~1.8 MB each).
    buffer = min(max(per_process, 16), 256)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=settings.read_threads, prefetch_buffer_size=buffer))
    it_ds = it_ds.batch(per_process, drop_remainder=True, batch_fn=_batch_fn)
    if settings.num_workers > 0:
        _ensure_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=settings.num_workers, per_worker_buffer_size=settings.worker_buffer_size))
    return DataIterator(iter(it_ds))


def make_eval_iterator(config, dataset_name: str, split: str | None = None, *, batch_size: int | None = None,
                       max_episodes: int | None = None):
    """Finite, deterministic (no augmentation: ``config.data.eval_ops``) iterator over one dataset's
    ``split`` (default: its ``eval_split``, "val"). Every transition / example appears once, in record
    order; the last batch may be smaller. ``source`` is the dataset's index in ``config.data.mixture``."""
    settings = read_settings(config)
    if dataset_name not in settings.datasets:
        raise DataError(f"unknown dataset '{dataset_name}' (config.data.datasets: {sorted(settings.datasets)})")
    _, ds = dataset_examples(settings, dataset_name, load_tokenizer(settings), split=split, max_records=max_episodes)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=settings.read_threads, prefetch_buffer_size=64))
    it_ds = it_ds.batch(batch_size or settings.batch_size, drop_remainder=False, batch_fn=_batch_fn)
    return (finalize_batch(batch) for batch in it_ds)


def source_names(config) -> list[str]:
    """Dataset name of each ``batch["source"]`` value (the order of ``config.data.mixture``)."""
    return list(read_settings(config).mixture)


def describe_mixture(config) -> list[dict]:
    """Rows of (name, kind, spec, weight, weight_share, records, size, share, dir) for the effective mixture
    (reads stats / counts): ``weight_share`` = weight / sum of weights; ``share`` = the sampling share
    (weights x sizes renormalized with ``balance_by_size``, else ``weight_share``)."""
    settings = read_settings(config)
    check_on_disk(settings)
    rows, sizes = [], {}
    for name, weight in settings.mixture.items():
        ds = settings.datasets[name]
        spec = get_spec(ds.spec, name)
        if ds.is_robot:
            st = stats_lib.load_stats(ds.dir, name, spec, settings.stats_dir, ds.kind)
            sizes[name], episodes = int(st["num_transitions"]), int(st["num_trajectories"])
        else:
            sizes[name] = episodes = len(sources.RecordReader(ds.dir, ds.train_split, name))
        rows.append({"name": name, "kind": ds.kind, "spec": ds.spec, "weight": weight, "size": sizes[name],
                     "records": episodes, "dir": ds.dir})
    shares = mixture_weights(settings, sizes)
    total = sum(w for w in settings.mixture.values() if w > 0)
    for row in rows:
        row["share"] = shares.get(row["name"], 0.0)
        row["weight_share"] = max(row["weight"], 0.0) / total
    return rows
