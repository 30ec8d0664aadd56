"""The prepare step: a dataset as released (TFDS, TFRecord or array_record) -> the prepared layout the
trainer reads (vla_jax/data/prepared.py), plus its normalization statistics.

    python tools/prepare_data.py --config=configs/pretrain.py:debug [--workers=N]

Work is one task per source shard, run in ``num_workers`` processes. A task writes its outputs under
``<prepared>/<dataset>.partial/<split>/`` and a done-marker last (naming the source file, its size and
content digest); a re-run skips the shards whose marker matches, so a killed or failed run resumes.
When every shard is done, the per-shard columns are joined, the manifest is written and the directory
is renamed into place; then the statistics are computed from the prepared numeric columns.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import shutil
import time
from typing import Callable

import numpy as np

from vla_jax.data import norm_stats, prepared, records, release
from vla_jax.data.errors import DataError
from vla_jax.progress import Progress

PARTIAL_SUFFIX = ".partial"
Report = Callable[[int, int], None]  # (episodes, transitions) finished


@dataclasses.dataclass(frozen=True)
class Task:
    """One source shard of one split."""

    dataset: str
    split: str
    index: int  # output shard index within the split
    shard: release.Shard
    file_format: str
    first: int  # split-wide index of the shard's first record
    out_dir: str  # the split's directory under the partial dataset
    spec: object  # RobotSpec | WebSpec
    layout: dict | None  # robot: prepared.robot_layout(spec, source_keys)
    source_keys: tuple = ()  # robot: every step key of the source (its first episode)

    @property
    def marker(self) -> str:
        return os.path.join(self.out_dir, f"shard-{self.index:05d}.done.json")

    @property
    def columns(self) -> str:
        """Robot: the shard's columns and episode lengths, joined by :func:`_robot_finalize`."""
        return os.path.join(self.out_dir, f"shard-{self.index:05d}.npz")

    def source_id(self) -> dict:
        return {"file": os.path.basename(self.shard.file), "records": self.shard.num_records,
                "digest": release.content_digest([self.shard.file])}


def _write_marker(task: Task, summary: dict) -> dict:
    summary = {**summary, "source": task.source_id()}
    tmp = f"{task.marker}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(summary, f)
    os.replace(tmp, task.marker)
    return summary


def _done(task: Task) -> dict | None:
    """The task's marker if it exists and still matches its source file."""
    if not os.path.isfile(task.marker):
        return None
    with open(task.marker) as f:
        summary = json.load(f)
    return summary if summary.get("source") == task.source_id() else None


# ----------------------------------------------------------------------------- robot


def _robot_shard(task: Task, report: Report) -> dict:
    """Frames + per-shard state, action and texts of one source shard of RLDS episodes."""
    from array_record.python.array_record_module import ArrayRecordWriter

    layout, spec, name = task.layout, task.spec, task.dataset
    frames = os.path.join(task.out_dir, prepared.frame_file(task.index))
    writer = ArrayRecordWriter(f"{frames}.tmp", "group_size:1,uncompressed")  # encoded images do not compress
    states, actions, lengths = [], [], []
    texts: dict[str, list[str]] = {role: [] for role in _text_roles(layout)}
    for j, record in enumerate(release.iter_records(task.shard, task.file_format, name)):
        episode = release.Episode(record, name)
        if not lengths:  # the layout check, on the shard's first episode
            release.check_robot_layout(episode, spec)
        num_steps = episode.num_steps
        images = {k: episode.values(k) for k in layout["image_keys"]}
        for t in range(num_steps):
            writer.write(records.make_record({"episode": task.first + j, "step": t},
                                             {k: images[k][t] for k in layout["image_keys"]}))
        states.append(release.for_dataset(name, spec.state_rows, episode.column, num_steps))
        actions.append(release.for_dataset(name, spec.action_rows, episode.column, num_steps))
        texts["instruction"] += [release.for_dataset(name, spec.instruction, episode.column, num_steps, t)
                                 for t in range(num_steps)]
        if layout["grounding_key"] is not None:
            texts["grounding"] += [records.to_text(v) for v in episode.values(layout["grounding_key"])]
        lengths.append(num_steps)
        report(1, num_steps)
    writer.close()
    empty = np.zeros((0, 0), np.float32)  # a shard without episodes; reshaped when the shards are joined
    with open(f"{task.columns}.tmp", "wb") as f:
        np.savez(f, lengths=np.asarray(lengths, np.int64), state=np.concatenate(states) if lengths else empty,
                 action=np.concatenate(actions) if lengths else empty,
                 **{role: np.asarray(values, dtype=str) for role, values in texts.items()})
    os.replace(f"{frames}.tmp", frames)
    os.replace(f"{task.columns}.tmp", task.columns)
    return _write_marker(task, {"episodes": len(lengths), "transitions": int(sum(lengths))})


def _text_roles(layout: dict) -> list[str]:
    return ["instruction"] + (["grounding"] if layout["grounding_key"] is not None else [])


def _robot_finalize(tasks: list[Task], summaries: list[dict]) -> dict:
    """Joins the shards of every split into the split's columns; returns the manifest's robot fields."""
    layout, spec = tasks[0].layout, tasks[0].spec
    dims = {"state": spec.state_dim, "action": spec.action_dim}  # checked on every shard's first episode
    splits = {}
    for split in dict.fromkeys(t.split for t in tasks):
        chosen = [(t, s) for t, s in zip(tasks, summaries) if t.split == split]
        out_dir = chosen[0][0].out_dir
        shards = [np.load(t.columns) for t, _ in chosen]
        np.save(os.path.join(out_dir, "episode_lengths.npy"), np.concatenate([z["lengths"] for z in shards]))
        for what, dim in dims.items():
            column = np.concatenate([z[what].reshape(int(z["lengths"].sum()), dim) for z in shards]).astype(np.float32)
            np.save(os.path.join(out_dir, what + ".npy"), column)
        for role in _text_roles(layout):
            values: dict[str, int] = {}
            ids = np.asarray([values.setdefault(v, len(values)) for z in shards for v in z[role].tolist()], np.int32)
            ids_file, values_file = prepared.text_files(role)
            np.save(os.path.join(out_dir, ids_file), ids)
            with open(os.path.join(out_dir, values_file), "w") as f:
                json.dump(list(values), f)
        for t, _ in chosen:
            os.remove(t.columns)
            os.remove(t.marker)
        splits[split] = {"episodes": sum(s["episodes"] for _, s in chosen),
                         "transitions": sum(s["transitions"] for _, s in chosen),
                         "files": [[prepared.frame_file(t.index), s["transitions"]] for t, s in chosen]}
    return {"source_keys": tasks[0].source_keys, "layout": layout, "dims": dims, "splits": splits}


# ----------------------------------------------------------------------------- web


def _web_shard(task: Task, report: Report) -> dict:
    """The source shard's example records, copied unchanged."""
    from array_record.python.array_record_module import ArrayRecordWriter

    out = os.path.join(task.out_dir, prepared.example_file(task.index))
    writer = ArrayRecordWriter(f"{out}.tmp", "group_size:1,uncompressed")  # encoded images do not compress
    count = 0
    for record in release.iter_records(task.shard, task.file_format, task.dataset):
        writer.write(record)
        count += 1
        report(1, 0)
    writer.close()
    os.replace(f"{out}.tmp", out)
    return _write_marker(task, {"examples": count})


def _web_finalize(tasks: list[Task], summaries: list[dict]) -> dict:
    splits = {}
    for task, summary in zip(tasks, summaries):
        entry = splits.setdefault(task.split, {"examples": 0, "files": []})
        entry["examples"] += summary["examples"]
        entry["files"].append([prepared.example_file(task.index), summary["examples"]])
        os.remove(task.marker)
    return {"splits": splits}


@dataclasses.dataclass(frozen=True)
class PrepareKind:
    shard: Callable[[Task, Report], dict]  # runs in a worker process
    finalize: Callable[[list, list], dict]  # (tasks, their summaries) -> the manifest's kind-specific fields


PREPARE_KINDS: dict[str, PrepareKind] = {
    "robot": PrepareKind(_robot_shard, _robot_finalize),
    "web": PrepareKind(_web_shard, _web_finalize),
}


# ----------------------------------------------------------------------------- running tasks

_QUEUE = None


def _init_worker(queue) -> None:
    global _QUEUE
    _QUEUE = queue


def _in_worker(kind: str, task: Task) -> dict:
    return PREPARE_KINDS[kind].shard(task, lambda episodes, transitions: _QUEUE.put((episodes, transitions)))


def _drain(queue, progress: Progress) -> None:
    while not queue.empty():
        progress.update(*queue.get())


def _run(kind: str, tasks: list[Task], num_workers: int, progress: Progress) -> None:
    if num_workers <= 1:
        for task in tasks:
            PREPARE_KINDS[kind].shard(task, progress.update)
        return
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    pool = concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context, initializer=_init_worker,
                                                  initargs=(queue,))
    try:
        pending = {pool.submit(_in_worker, kind, task) for task in tasks}
        while pending:
            done, pending = concurrent.futures.wait(pending, timeout=0.5,
                                                    return_when=concurrent.futures.FIRST_COMPLETED)
            _drain(queue, progress)
            for future in done:
                future.result()  # a worker's DataError stops the run; finished shards keep their markers
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    _drain(queue, progress)


# ----------------------------------------------------------------------------- datasets


def _plan(source: release.Release, path: str, dataset: str, spec, source_keys: list[str]) -> list[Task]:
    partial = path + PARTIAL_SUFFIX
    layout = prepared.robot_layout(spec, source_keys) if spec.kind == "robot" else None
    tasks = []
    for split, shards in sorted(source.splits.items()):
        first = 0
        for index, shard in enumerate(shards):
            tasks.append(Task(dataset, split, index, shard, source.file_format, first,
                              os.path.join(partial, split), spec, layout, tuple(source_keys)))
            first += shard.num_records
    return tasks


def _open_partial(path: str, plan: dict) -> str:
    """The partial directory of ``path`` for ``plan`` (kept if made for the same plan, else emptied)."""
    partial = path + PARTIAL_SUFFIX
    plan_file = os.path.join(partial, "plan.json")
    if os.path.isfile(plan_file):
        with open(plan_file) as f:
            if json.load(f) == plan:
                return partial
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    with open(plan_file, "w") as f:
        json.dump(plan, f)
    return partial


def is_up_to_date(source_dir: str, path: str, dataset: str, spec) -> bool:
    """True if ``path`` holds a prepared copy of the current ``source_dir`` made for ``spec``'s layout."""
    try:
        manifest = prepared.read_manifest(path, dataset)
    except DataError:
        return False
    if manifest["kind"] != spec.kind or manifest["source"] != prepared.source_entry(source_dir, dataset):
        return False
    return spec.kind != "robot" or prepared.robot_layout(spec, manifest["source_keys"]) == manifest["layout"]


def prepare_dataset(source_dir: str, path: str, dataset: str, spec, *, stats_dir: str | None = None,
                    num_workers: int | None = None, progress: bool = True, log=print) -> bool:
    """Prepares ``source_dir`` (a TFDS dataset root or versioned dir) into ``path`` unless up to date, then
    (robot, with ``stats_dir``) makes sure its statistics exist. ``num_workers``: processes (None: all
    cores; 0 or 1: in this process). Returns True if it prepared."""
    done = is_up_to_date(source_dir, path, dataset, spec)
    if done:
        log(f"[prepare] {dataset}: up to date ({path})")
    else:
        _prepare(source_dir, path, dataset, spec, num_workers, progress, log)
    if stats_dir is not None and spec.kind == "robot":
        norm_stats.ensure_stats(path, dataset, spec, stats_dir, log=log)
    return not done


def _prepare(source_dir: str, path: str, dataset: str, spec, num_workers: int | None, progress: bool, log) -> None:
    start = time.perf_counter()
    source = release.open_release(source_dir, dataset)
    entry = prepared.source_entry(source_dir, dataset)
    source_keys = _first_step_keys(source, dataset) if spec.kind == "robot" else []
    tasks = _plan(source, path, dataset, spec, source_keys)
    plan = {"format": prepared.FORMAT, "kind": spec.kind, "layout": tasks[0].layout, "source": entry["path"],
            "dims": [getattr(spec, "state_dim", 0), getattr(spec, "action_dim", 0)],
            "tasks": [[t.split, os.path.basename(t.shard.file), t.shard.num_records] for t in tasks]}
    partial = _open_partial(path, plan)
    for split in source.splits:
        os.makedirs(os.path.join(partial, split), exist_ok=True)
    todo = [t for t in tasks if _done(t) is None]
    workers = min((os.cpu_count() or 1) if num_workers is None else num_workers, len(todo))
    log(f"[prepare] {dataset}: {source.path} ({source.file_format}) -> {path}: {len(tasks)} shards, "
        f"{len(tasks) - len(todo)} already done, {max(workers, 1)} process(es)")
    bar = Progress(f"[prepare] {dataset}", sum(t.shard.num_records for t in todo), unit="episodes",
                   rate_of="transitions", enabled=progress)
    try:
        _run(spec.kind, todo, workers, bar)
    finally:
        bar.close()
    summaries = [_done(t) for t in tasks]
    manifest = {"format": prepared.FORMAT, "kind": spec.kind, "dataset": dataset, "source": entry,
                **PREPARE_KINDS[spec.kind].finalize(tasks, summaries)}
    prepared.write_manifest(partial, manifest)
    os.remove(os.path.join(partial, "plan.json"))
    _swap_in(partial, path)
    seconds = time.perf_counter() - start
    counts = {s: {k: v for k, v in info.items() if k != "files"} for s, info in manifest["splits"].items()}
    rate = f", {bar.counted / seconds:,.0f} transitions/s" if bar.counted else ""
    log(f"[prepare] {dataset}: wrote {path} {counts} in {seconds:.1f}s{rate}")


def _first_step_keys(source: release.Release, dataset: str) -> list[str]:
    """Step keys of the first episode of the source (recorded in the manifest for one-line errors; whether
    it records the spec's grounding text)."""
    for shards in source.splits.values():
        for shard in shards:
            for record in release.READERS[source.file_format](shard.file, dataset):
                return release.Episode(record, dataset).step_keys()
    raise DataError(f"dataset '{dataset}': {source.path} holds no episodes")


def _swap_in(partial: str, path: str) -> None:
    """Renames the finished ``partial`` to ``path``, replacing an older copy."""
    old = f"{path}.old-{os.getpid()}"
    if os.path.exists(path):
        os.rename(path, old)
    os.rename(partial, path)
    shutil.rmtree(old, ignore_errors=True)


def prepare_all(config, *, num_workers: int | None = None, progress: bool = True, log=print) -> dict[str, str]:
    """Prepares every dataset of ``config.data.mixture`` (and the norm-group members of its robot datasets)
    whose kind has a prepare step, robot ones with their statistics, unless up to date; returns
    {dataset: prepared path}. Mixture datasets missing on disk: one line (or left out with drop_missing)."""
    from vla_jax.data.settings import check_on_disk, dropped_line, read_settings
    from vla_jax.data.specs import get_spec

    settings = read_settings(config)
    check_on_disk(settings)
    if settings.dropped:
        log(dropped_line(settings))
    names = []
    for name in settings.mixture:
        members = settings.norm_group_members(name) if settings.datasets[name].is_robot else []
        names += [n for n in [name, *members] if n not in names]
    out = {}
    for name in names:
        ds = settings.datasets[name]
        if ds.kind in PREPARE_KINDS:
            prepare_dataset(ds.dir, ds.prepared, name, get_spec(ds.spec, name), stats_dir=settings.stats_dir,
                            num_workers=num_workers, progress=progress, log=log)
            out[name] = ds.prepared
    return out
