"""LeRobotDataset directories (codebase v2.1 and v3.0) as a robot dataset kind: ``kind="lerobot"`` in
``config.data.datasets`` (docs/data.md, "LeRobot datasets").

Layout read::

    meta/info.json      codebase_version, fps, features {name: {dtype, shape, names}}, data_path / video_path
                        templates, chunks_size, splits {"train": "0:50"} (ranges of episode indices)
    meta/tasks.jsonl    v2.1: {"task_index", "task"} per line      | v3.0: meta/tasks.parquet (task_index, task)
    meta/episodes.jsonl v2.1: {"episode_index", "tasks", "length"} | v3.0: meta/episodes/chunk-*/file-*.parquet:
                        episode_index, length, data/{chunk,file}_index, dataset_from_index,
                        videos/<key>/{chunk_index, file_index, from_timestamp}
    data/...parquet     one row per frame: numeric features (lists), image features ({bytes, path} structs),
                        timestamp, frame_index, episode_index, index, task_index; v2.1 one file per episode,
                        v3.0 files of consecutive episodes
    videos/...mp4       cameras of dtype "video": v2.1 one file per episode and camera; v3.0 episodes
                        concatenated, an episode's frame at ``timestamp`` shown at ``from_timestamp + timestamp``

A dataset's spec is a registered :class:`~vla_jax.data.specs.RobotSpec` whose keys are feature names (cameras
``observation.images.<cam>``, state / action features concatenated in order) and whose ``instruction_key`` is
``"task_index"`` (the frame's task text). Element i of :class:`LeRobotFrames` is the raw robot sample of one frame,
the dict ``RobotTransitions`` returns, so transforms, normalization, mixing and ``set_state`` work unchanged.
Per sample: each camera decodes one frame (PyAV: seek to the keyframe at or before the frame's time, decode
forward to it; video containers stay open per reading thread); state, the action chunk [t, t + H) and the task
come from the parquet through a bounded per-thread cache of row groups (numeric columns only; an image column
is read only for its camera). Statistics read the state and action columns of the split's data files.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import threading
import time

import numpy as np

from vla_jax.data import mixture, norm_stats as stats_lib, settings as settings_lib
from vla_jax.data.errors import DataError
from vla_jax.data.specs import RobotSpec, get_spec
from vla_jax.data.transforms import Dims

CACHE_BYTES = 64 * 2**20  # decoded parquet row groups kept per reading thread
MAX_OPEN_VIDEOS = 32  # video containers kept open per reading thread (least recently used closed)
CAMERA_DTYPES = ("video", "image")
HINT = "expected a LeRobotDataset directory (meta/info.json; codebase v2.1 or v3.0)"


def _av_error():
    import av

    return av.error.FFmpegError


@contextlib.contextmanager
def _reading(dataset: str, relative: str, where: str = ""):
    """Turns a failure to read or decode ``relative`` into one DataError line naming the file (and ``where``)."""
    try:
        yield
    except DataError:
        raise
    except (OSError, ValueError, KeyError, IndexError, EOFError, _av_error()) as e:
        raise DataError(f"dataset '{dataset}': cannot read {relative}{where}: {type(e).__name__}: {e}") from None


@dataclasses.dataclass(frozen=True)
class EpisodeFiles:
    """Where one episode lives: ``length`` frames from row ``row`` of the parquet file ``data`` on; per video
    camera, (mp4 file, time in s of the episode's first frame in it). Paths relative to the dataset root."""

    length: int
    data: str
    row: int
    videos: dict


def _jsonl(meta: LeRobotMeta, relative: str) -> list[dict]:
    with meta.reading(relative), open(meta.path(relative)) as f:
        return [json.loads(line) for line in f if line.strip()]


def _layout_v21(meta: LeRobotMeta) -> tuple[dict, dict]:
    """(tasks {task_index: text}, episodes {episode_index: EpisodeFiles}) of a v2.1 dataset."""
    info = meta.info
    tasks = {int(r["task_index"]): str(r["task"]) for r in _jsonl(meta, "meta/tasks.jsonl")}
    chunks = int(info["chunks_size"])
    episodes = {}
    for r in _jsonl(meta, "meta/episodes.jsonl"):
        e = int(r["episode_index"])
        names = dict(episode_chunk=e // chunks, episode_index=e)
        videos = {k: (info["video_path"].format(video_key=k, **names), 0.0) for k in meta.video_keys}
        episodes[e] = EpisodeFiles(int(r["length"]), info["data_path"].format(**names), 0, videos)
    return tasks, episodes


def _layout_v30(meta: LeRobotMeta) -> tuple[dict, dict]:
    """(tasks, episodes) of a v3.0 dataset; an episode's first row in its data file is its dataset_from_index
    minus the smallest dataset_from_index of the episodes in that file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    info = meta.info
    with meta.reading("meta/tasks.parquet"):
        table = pq.read_table(meta.path("meta/tasks.parquet"))
        text = [c for c in table.column_names if c != "task_index"][0]
        tasks = dict(zip(table.column("task_index").to_pylist(), map(str, table.column(text).to_pylist())))
    files = sorted(glob.glob(meta.path("meta/episodes/chunk-*/file-*.parquet")))
    if not files:
        raise DataError(f"dataset '{meta.dataset}': no meta/episodes/chunk-*/file-*.parquet in {meta.root}; {HINT}")
    columns = ["episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index"]
    for k in meta.video_keys:
        columns += [f"videos/{k}/chunk_index", f"videos/{k}/file_index", f"videos/{k}/from_timestamp"]
    with meta.reading("meta/episodes"):
        rows = pa.concat_tables([pq.read_table(f, columns=columns) for f in files]).to_pydict()
    data = [info["data_path"].format(chunk_index=c, file_index=f)
            for c, f in zip(rows["data/chunk_index"], rows["data/file_index"])]
    first: dict[str, int] = {}
    for path, start in zip(data, rows["dataset_from_index"]):
        first[path] = min(first.get(path, start), start)
    episodes = {}
    for i, e in enumerate(rows["episode_index"]):
        videos = {k: (info["video_path"].format(video_key=k, chunk_index=rows[f"videos/{k}/chunk_index"][i],
                                                file_index=rows[f"videos/{k}/file_index"][i]),
                      float(rows[f"videos/{k}/from_timestamp"][i])) for k in meta.video_keys}
        row = int(rows["dataset_from_index"][i]) - first[data[i]]
        episodes[int(e)] = EpisodeFiles(int(rows["length"][i]), data[i], row, videos)
    return tasks, episodes


# codebase_version -> reader of (tasks, episodes). v2.0 has v2.1's layout (v2.1 only added per-episode stats).
LAYOUTS = {"v2.0": _layout_v21, "v2.1": _layout_v21, "v3.0": _layout_v30}


class LeRobotMeta:
    """The ``meta/`` folder of one dataset: info, tasks and where each episode lives (no data file is opened)."""

    def __init__(self, root: str, dataset: str):
        self.root, self.dataset = os.path.abspath(root), dataset
        if not os.path.isfile(self.path("meta/info.json")):
            raise DataError(f"dataset '{dataset}': {self.path('meta/info.json')} not found; {HINT}")
        with self.reading("meta/info.json"), open(self.path("meta/info.json")) as f:
            self.info = json.load(f)
            self.version = str(self.info["codebase_version"])
            self.fps = float(self.info["fps"])
            self.features = dict(self.info["features"])
        if self.version not in LAYOUTS:
            raise DataError(f"dataset '{dataset}': codebase_version {self.version!r} in meta/info.json is not one of "
                            f"{sorted(LAYOUTS)}")
        self.video_keys = sorted(k for k, f in self.features.items() if f.get("dtype") == "video")
        with self.reading("meta/info.json"):
            self.tasks, self.episodes = LAYOUTS[self.version](self)

    def path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def reading(self, relative: str, where: str = ""):
        return _reading(self.dataset, relative, where)

    def split_episodes(self, split: str) -> np.ndarray:
        """Sorted episode indices of ``split`` (meta/info.json ``splits``: "start:stop" episode index ranges)."""
        splits = self.info.get("splits") or {}
        if split not in splits:
            raise DataError(f"dataset '{self.dataset}': split '{split}' not in meta/info.json splits {splits}")
        start, stop = (int(x) for x in str(splits[split]).split(":"))
        return np.asarray([e for e in sorted(self.episodes) if start <= e < stop], np.int64)

    def task(self, index: int) -> str:
        if index not in self.tasks:
            raise DataError(f"dataset '{self.dataset}': task_index {index} is not in the tasks of meta/")
        return self.tasks[index]


def check_spec(meta: LeRobotMeta, spec: RobotSpec, dims: Dims | None = None) -> None:
    """One line if meta/info.json's features do not fit ``spec`` (and ``dims``' maximum state / action dims)."""
    name, features = meta.dataset, meta.features
    cameras = sorted(k for k, f in features.items() if f.get("dtype") in CAMERA_DTYPES)
    for slot, key in enumerate(spec.image_keys):
        if key is not None and features.get(key, {}).get("dtype") not in CAMERA_DTYPES:
            raise DataError(f"dataset '{name}': camera '{key}' (slot {slot}, spec '{spec.name}') is not a video or "
                            f"image feature in meta/info.json; cameras: {cameras}")
    for what, keys, dim in (("action", spec.action_keys, spec.action_dim), ("state", spec.state_keys, spec.state_dim)):
        missing = [k for k in keys if k not in features]
        if missing:
            raise DataError(f"dataset '{name}': {what} features {missing} (spec '{spec.name}') are not in "
                            f"meta/info.json; features: {sorted(features)}")
        got = sum(int(np.prod(features[k]["shape"])) for k in keys)
        if got != dim:
            raise DataError(f"dataset '{name}': {what} features {list(keys)} are {got}-D but spec '{spec.name}' "
                            f"expects {dim}-D")
        cap = getattr(dims, f"max_{what}_dim", None)
        if cap is not None and dim > cap:
            raise DataError(f"dataset '{name}': {what} is {dim}-D, more than config.model.max_{what}_dim={cap}")
    if spec.instruction_key != "task_index":
        raise DataError(f"dataset '{name}': spec '{spec.name}' has instruction_key={spec.instruction_key!r}; LeRobot "
                        "datasets take the instruction from 'task_index'")
    if abs(meta.fps - spec.control_hz) > 1e-6:
        raise DataError(f"dataset '{name}': meta/info.json says {meta.fps:g} fps but spec '{spec.name}' has "
                        f"control_hz={spec.control_hz:g}")


def _floats(column) -> np.ndarray:
    """[n, d] float32 of a numeric column (scalars, fixed-size or variable lists, nested lists flattened)."""
    import pyarrow as pa

    n = len(column)
    while pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(
            column.type):
        column = column.flatten()
    return np.asarray(column, np.float32).reshape(n, -1)


def _concat(table, keys) -> np.ndarray:
    """[n, sum of dims] float32: the numeric features ``keys`` of ``table`` concatenated in order."""
    parts = [_floats(table.column(k).combine_chunks()) for k in keys]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)


class _Rows:
    """Rows of parquet columns through a bounded cache of decoded row groups (one per reading thread)."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self.groups: collections.OrderedDict = collections.OrderedDict()  # (path, group, columns) -> pyarrow Table
        self.bounds: dict[str, np.ndarray] = {}  # path -> first row of each row group, then the row count

    def get(self, path: str, columns: tuple, start: int, stop: int):
        """pyarrow Table of rows [start, stop) of ``columns`` of the parquet file ``path``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if path not in self.bounds:
            meta = pq.read_metadata(path)
            self.bounds[path] = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        bounds = self.bounds[path]
        if not 0 <= start < stop <= bounds[-1]:
            raise IndexError(f"rows [{start}, {stop}) outside the file's {bounds[-1]} rows")
        parts = []
        for g in range(int(np.searchsorted(bounds, start, side="right")) - 1, len(bounds) - 1):
            if bounds[g] >= stop:
                break
            key = (path, g, columns)
            if key in self.groups:
                self.groups.move_to_end(key)
            else:
                self.groups[key] = pq.ParquetFile(path).read_row_group(g, columns=list(columns))
                self.bytes += self.groups[key].nbytes
                while self.bytes > self.max_bytes and len(self.groups) > 1:
                    self.bytes -= self.groups.popitem(last=False)[1].nbytes
            lo = max(start, bounds[g])
            parts.append(self.groups[key].slice(lo - bounds[g], min(stop, bounds[g + 1]) - lo))
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


class _Videos:
    """Open video containers (at most ``max_open``; the least recently used is closed) and one-frame decoding."""

    def __init__(self, max_open: int):
        self.max_open = max_open
        self.open: collections.OrderedDict = collections.OrderedDict()  # path -> av container

    def _container(self, path: str):
        import av

        if path in self.open:
            self.open.move_to_end(path)
        else:
            self.open[path] = av.open(path)
            while len(self.open) > self.max_open:
                self.open.popitem(last=False)[1].close()
        container = self.open[path]
        if not container.streams.video:
            raise ValueError("no video stream")
        return container

    def frame(self, path: str, time_s: float, fps: float) -> np.ndarray:
        """uint8 [H, W, 3] RGB: the frame shown at ``time_s`` (within half a frame period), decoded forward from
        the keyframe at or before it."""
        container = self._container(path)
        stream = container.streams.video[0]
        tolerance = 0.5 / fps
        container.seek(int(max(time_s - tolerance, 0.0) / stream.time_base), backward=True, any_frame=False,
                       stream=stream)
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= time_s - tolerance:
                if frame.time <= time_s + tolerance:
                    return frame.to_ndarray(format="rgb24")
                break
        raise EOFError(f"no frame within {tolerance * 1e3:.1f} ms of {time_s:.4f} s (truncated video?)")


class LeRobotFrames:
    """grain random-access source: element i = raw robot sample of frame i of ``episode_ids`` (in order).

    Raw sample as ``RobotTransitions``: {"source", "images": [uint8 [H, W, 3] (video) | PNG/JPEG bytes (image
    feature) | None per camera slot], "state": [S], "actions": [n, A] frames t .. t + n - 1 with n =
    min(H, frames left), "num_steps": n, "instruction": the frame's task}.
    """

    def __init__(self, meta: LeRobotMeta, spec: RobotSpec, episode_ids, horizon: int, num_cameras: int, source: int,
                 cache_bytes: int = CACHE_BYTES, max_open_videos: int = MAX_OPEN_VIDEOS):
        self.meta, self.spec, self.horizon, self.source = meta, spec, horizon, source
        self.cameras = list(spec.image_keys[:num_cameras])
        self.episode_ids = np.asarray(episode_ids, np.int64)
        self.lengths = np.asarray([meta.episodes[int(e)].length for e in self.episode_ids], np.int64)
        self.ends = np.cumsum(self.lengths)
        self.numeric = tuple(dict.fromkeys((*spec.state_keys, *spec.action_keys, "episode_index", "task_index",
                                            "timestamp")))
        self.cache_bytes, self.max_open_videos = cache_bytes, max_open_videos
        self._local = threading.local()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def _caches(self) -> tuple[_Rows, _Videos]:
        local = self._local
        if not hasattr(local, "rows"):
            local.rows, local.videos = _Rows(self.cache_bytes), _Videos(self.max_open_videos)
        return local.rows, local.videos

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def locate(self, index: int) -> tuple[int, int]:
        """(episode index, frame) of element ``index``."""
        k = int(np.searchsorted(self.ends, index, side="right"))
        return int(self.episode_ids[k]), int(index - (self.ends[k - 1] if k else 0))

    def __getitem__(self, index: int) -> dict:
        episode, t = self.locate(int(index) % len(self))
        files = self.meta.episodes[episode]
        stop = min(t + self.horizon, files.length)
        rows, _ = self._caches()
        with self.meta.reading(files.data, f" (episode {episode})"):
            table = rows.get(self.meta.path(files.data), self.numeric, files.row + t, files.row + stop)
            found = table.column("episode_index")[0].as_py()
            timestamp = float(table.column("timestamp")[0].as_py())
            task = int(table.column("task_index")[0].as_py())
        if found != episode:
            raise DataError(f"dataset '{self.meta.dataset}': row {files.row + t} of {files.data} is episode {found}, "
                            f"not episode {episode} as meta/ says")
        return {
            "source": self.source,
            "images": [self._image(k, episode, t, timestamp) if k is not None else None for k in self.cameras],
            "state": _concat(table.slice(0, 1), self.spec.state_keys)[0],
            "actions": _concat(table, self.spec.action_keys),
            "num_steps": stop - t,
            "instruction": self.meta.task(task),
        }

    def _image(self, key: str, episode: int, t: int, timestamp: float):
        files = self.meta.episodes[episode]
        rows, videos = self._caches()
        if key in files.videos:
            relative, start = files.videos[key]
            with self.meta.reading(relative, f" (episode {episode}, camera {key})"):
                return videos.frame(self.meta.path(relative), start + timestamp, self.meta.fps)
        with self.meta.reading(files.data, f" (episode {episode}, camera {key})"):
            cell = rows.get(self.meta.path(files.data), (key,), files.row + t, files.row + t + 1).column(0)[0].as_py()
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not data:
            raise DataError(f"dataset '{self.meta.dataset}': image '{key}' of episode {episode} frame {t} has no bytes "
                            f"in {files.data}")
        return data


# ----------------------------------------------------------------------------- statistics


def compute_stats(path: str, dataset: str, spec: RobotSpec, split: str = "train", log=print) -> dict:
    """Statistics of ``split`` (vla_jax/data/norm_stats.py format) from the state and action columns of its
    data files (no image or video is read)."""
    import pyarrow.parquet as pq

    meta = LeRobotMeta(path, dataset)
    check_spec(meta, spec)
    start = time.perf_counter()
    episodes = meta.split_episodes(split)
    by_file: dict[str, list[int]] = {}
    for e in episodes:
        by_file.setdefault(meta.episodes[int(e)].data, []).append(int(e))
    columns = list(dict.fromkeys((*spec.state_keys, *spec.action_keys, "episode_index")))
    actions, states = {}, {}
    for relative, ids in by_file.items():
        with meta.reading(relative):
            table = pq.read_table(meta.path(relative), columns=columns)
        for e in ids:
            files = meta.episodes[e]
            rows = table.slice(files.row, files.length)
            if rows.num_rows != files.length or set(rows.column("episode_index").to_pylist()) != {e}:
                raise DataError(f"dataset '{dataset}': rows [{files.row}, {files.row + files.length}) of {relative} "
                                f"are not the {files.length} frames of episode {e} that meta/ describes")
            actions[e], states[e] = _concat(rows, spec.action_keys), _concat(rows, spec.state_keys)
    return stats_lib.summarize(dataset, spec, split, [actions[int(e)] for e in episodes],
                               [states[int(e)] for e in episodes], time.perf_counter() - start, log)


def _digest(meta: LeRobotMeta, files: list[str], parquet_footer: bool) -> str:
    """Hash of each file's path, size and content: the whole file, or with ``parquet_footer`` only its footer
    (schema, row groups, per-column min / max; a few KB, so a v2.1 dataset's file per episode stays cheap)."""
    digest = hashlib.sha256()
    for relative in files:
        with meta.reading(relative), open(meta.path(relative), "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = 0
            if parquet_footer:
                f.seek(max(size - 8, 0))
                start = max(size - 8 - int.from_bytes(f.read(4), "little"), 0)  # footer length, then b"PAR1"
            f.seek(start)
            digest.update(f"{relative}:{size}:".encode() + f.read())
    return digest.hexdigest()


def fingerprint(path: str, dataset: str, spec: RobotSpec, split: str = "train") -> str:
    """12 hex digits naming the statistics of ``split``: the resolved path, the split's episodes, meta/ (whole
    files: info, tasks, episodes with their per-episode statistics), each data file's path, size and parquet
    footer, and the spec. Videos are left out (statistics do not read them)."""
    meta = LeRobotMeta(path, dataset)
    meta_files = sorted(os.path.relpath(f, meta.root) for f in glob.glob(meta.path("meta/**"), recursive=True)
                        if os.path.isfile(f))
    payload = {
        "format": stats_lib.FINGERPRINT_FORMAT,
        "kind": "lerobot",
        "path": meta.root,
        "version": meta.version,
        "split": split,
        "episodes": meta.split_episodes(split).tolist(),
        "meta": _digest(meta, meta_files, parquet_footer=False),
        "data": _digest(meta, sorted({f.data for f in meta.episodes.values()}), parquet_footer=True),
        "spec": spec.fingerprint(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- the pipeline's hook


def build_source(settings, name: str, source_index: int, *, split: str, process_index: int = 0,
                 process_count: int = 1, max_records: int | None = None) -> mixture.SourceEntry:
    """This process's share (by episode) of ``split`` of LeRobot dataset ``name`` (``mixture.build_source``)."""
    ds = settings.datasets[name]
    spec = get_spec(ds.spec, name)
    meta = LeRobotMeta(ds.dir, name)
    check_spec(meta, spec, settings.dims)
    ids = meta.split_episodes(split)[:max_records]
    if len(ids) == 0:
        raise DataError(f"dataset '{name}': split '{split}' has no episodes")
    shard = mixture._shard(ids, name, process_index, process_count)  # noqa: SLF001 - the pipeline's own sharding
    _, group = mixture.dataset_stats(settings, name)
    source = LeRobotFrames(meta, spec, shard, settings.dims.action_horizon, settings.dims.num_cameras, source_index)
    size = int(sum(meta.episodes[int(e)].length for e in ids))
    return mixture.SourceEntry(name, "robot", source, mixture.robot_source_info(spec, group), size)


settings_lib.SPEC_KINDS["lerobot"] = "robot"
stats_lib.STATS_READERS["lerobot"] = (fingerprint, compute_stats)
mixture.ROBOT_SOURCE_KINDS["lerobot"] = build_source
