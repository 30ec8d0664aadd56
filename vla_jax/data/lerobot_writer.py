"""Writes LeRobotDataset directories (codebase v2.1 and v3.0), the layout vla_jax/data/lerobot.py reads, from
numpy episodes: the project's own writer for tests, tools/generate_data.py (``--lerobot``) and conversions.

    write_lerobot_dataset(root, episodes, fps=50, version="v3.0")

``episodes``: dicts {"task": str, feature: array [T, ...]}; uint8 [T, H, W, 3] arrays are cameras (mp4 videos
of ``codec``, or PNG bytes in the parquet with ``video=False``), every other array a float32 [T, D] feature.
v3.0 puts ``episodes_per_file`` consecutive episodes in one data file and one video per camera (one continuous
stream, so an episode need not start on a keyframe). ``splits`` ({"train": "0:8", "val": "8:10"}) default to
all episodes in "train". Statistics in meta/ cover numeric features only.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Sequence

import numpy as np

# Encoder options per codec: near-lossless for smooth frames (mean error < 2/255 at 64 px, tests/test_data_lerobot.py).
CODEC_OPTIONS = {"libx264": {"crf": "18"}, "mpeg4": {"qmin": "1", "qmax": "3"}, "libsvtav1": {"crf": "30"}}
V21_DATA = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
V30_DATA = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_VIDEO = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"


def default_codec() -> str:
    """H.264 (libx264) when the PyAV wheel has it, else MPEG-4 part 2."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def encode_video(path: str, clips: Sequence[np.ndarray], fps: int, codec: str, gop: int = 2) -> None:
    """One mp4 stream of ``clips`` (uint8 [T_i, H, W, 3] each) back to back, yuv420p, a keyframe every ``gop``."""
    import av

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = clips[0].shape[1:3]
        stream.pix_fmt, stream.gop_size = "yuv420p", gop
        stream.options = dict(CODEC_OPTIONS.get(codec, {}))
        for clip in clips:
            for image in clip:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")))
        container.mux(stream.encode())


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def _is_camera(array: np.ndarray) -> bool:
    return array.dtype == np.uint8 and array.ndim == 4


def _stats(array: np.ndarray) -> dict:
    """LeRobot's per-feature statistics of [T, D] values."""
    values = np.asarray(array, np.float64)
    return {"min": values.min(0).tolist(), "max": values.max(0).tolist(), "mean": values.mean(0).tolist(),
            "std": values.std(0).tolist(), "count": [len(values)]}


def _frames_table(episode: dict, index: int, first: int, task_index: int, features: dict, fps: int):
    """The parquet rows of one episode (``first``: its first global frame index)."""
    import pyarrow as pa

    n = _length(episode)
    columns = {}
    for key, value in episode.items():
        if key == "task" or features[key]["dtype"] == "video":
            continue
        if features[key]["dtype"] == "image":
            columns[key] = pa.array([{"bytes": _png(im), "path": None} for im in value],
                                    pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        else:
            flat = np.asarray(value, np.float32).reshape(n, -1)
            columns[key] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
    columns.update(
        timestamp=pa.array(np.arange(n, dtype=np.float32) / np.float32(fps)),
        frame_index=pa.array(np.arange(n, dtype=np.int64)),
        episode_index=pa.array(np.full(n, index, np.int64)),
        index=pa.array(np.arange(first, first + n, dtype=np.int64)),
        task_index=pa.array(np.full(n, task_index, np.int64)),
    )
    return pa.table(columns)


def _length(episode: dict) -> int:
    return len(next(v for k, v in episode.items() if k != "task"))


def _features(episode: dict, fps: int, video: bool, codec: str) -> dict:
    features = {}
    for key, value in episode.items():
        if key == "task":
            continue
        if _is_camera(value):
            h, w = value.shape[1:3]
            feature = {"dtype": "video" if video else "image", "shape": [h, w, 3],
                       "names": ["height", "width", "channels"]}
            if video:
                import av

                feature["info"] = {"video.height": h, "video.width": w, "video.codec": av.codec.Codec(codec, "w").name,
                                   "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                                   "video.channels": 3, "has_audio": False}
        else:
            feature = {"dtype": "float32", "shape": list(np.shape(value)[1:]) or [1], "names": None}
        features[key] = feature
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64")):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    return features


def _write_json(root: str, relative: str, value) -> None:
    os.makedirs(os.path.dirname(os.path.join(root, relative)), exist_ok=True)
    with open(os.path.join(root, relative), "w") as f:
        json.dump(value, f, indent=2)


def _write_jsonl(root: str, relative: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.join(root, relative)), exist_ok=True)
    with open(os.path.join(root, relative), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def _write_parquet(table, path: str) -> None:
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)


@dataclasses.dataclass
class _Plan:
    """What both layouts write: the episodes, their parquet rows, the cameras to encode, info.json (completed by
    the layout writer) and the task indices."""

    root: str
    episodes: list
    tables: list
    videos: list  # camera features stored as mp4
    info: dict
    tasks: dict  # text -> task_index
    codec: str
    gop: int
    episodes_per_file: int


def _write_v21(plan: _Plan) -> None:
    """One parquet file per episode, one mp4 per episode and camera, jsonl metadata."""
    info, chunks = plan.info, plan.info["chunks_size"]
    info.update(data_path=V21_DATA, video_path=V21_VIDEO if plan.videos else None,
                total_chunks=-(-len(plan.episodes) // chunks))
    for e, (episode, table) in enumerate(zip(plan.episodes, plan.tables)):
        names = dict(episode_chunk=e // chunks, episode_index=e)
        _write_parquet(table, os.path.join(plan.root, V21_DATA.format(**names)))
        for key in plan.videos:
            encode_video(os.path.join(plan.root, V21_VIDEO.format(video_key=key, **names)), [episode[key]],
                         info["fps"], plan.codec, plan.gop)
    _write_jsonl(plan.root, "meta/tasks.jsonl", [{"task_index": i, "task": t} for t, i in plan.tasks.items()])
    _write_jsonl(plan.root, "meta/episodes.jsonl", [{"episode_index": e, "tasks": [ep["task"]], "length": _length(ep)}
                                                    for e, ep in enumerate(plan.episodes)])
    _write_jsonl(plan.root, "meta/episodes_stats.jsonl", [{"episode_index": e, "stats": _numeric_stats(ep)}
                                                          for e, ep in enumerate(plan.episodes)])


def _write_v30(plan: _Plan) -> None:
    """Files of ``episodes_per_file`` consecutive episodes (parquet rows, one mp4 stream per camera), parquet
    metadata with each episode's file indices, first row and video start time."""
    import pyarrow as pa

    info, chunks, fps = plan.info, plan.info["chunks_size"], plan.info["fps"]
    info.update(data_path=V30_DATA, video_path=V30_VIDEO if plan.videos else None, data_files_size_in_mb=100,
                video_files_size_in_mb=500)
    rows: list[dict] = []
    for k, first in enumerate(range(0, len(plan.episodes), plan.episodes_per_file)):
        ids = range(first, min(first + plan.episodes_per_file, len(plan.episodes)))
        where = dict(chunk_index=k // chunks, file_index=k % chunks)
        _write_parquet(pa.concat_tables([plan.tables[e] for e in ids]),
                       os.path.join(plan.root, V30_DATA.format(**where)))
        for key in plan.videos:
            encode_video(os.path.join(plan.root, V30_VIDEO.format(video_key=key, **where)),
                         [plan.episodes[e][key] for e in ids], fps, plan.codec, plan.gop)
        offset = 0
        for e in ids:
            n, start = plan.tables[e].num_rows, plan.tables[e].column("index")[0].as_py()
            row = {"episode_index": e, "tasks": [plan.episodes[e]["task"]], "length": n,
                   "data/chunk_index": where["chunk_index"], "data/file_index": where["file_index"],
                   "dataset_from_index": start, "dataset_to_index": start + n}
            for key in plan.videos:
                row.update({f"videos/{key}/chunk_index": where["chunk_index"],
                            f"videos/{key}/file_index": where["file_index"],
                            f"videos/{key}/from_timestamp": offset / fps,
                            f"videos/{key}/to_timestamp": (offset + n) / fps})
            stats = _numeric_stats(plan.episodes[e])
            row.update({f"stats/{f}/{s}": v for f, st in stats.items() for s, v in st.items()})
            row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
            rows.append(row)
            offset += n
    _write_parquet(pa.Table.from_pylist(rows), os.path.join(plan.root, "meta/episodes/chunk-000/file-000.parquet"))
    _write_parquet(pa.table({"task_index": pa.array(list(plan.tasks.values()), pa.int64()), "task": list(plan.tasks)}),
                   os.path.join(plan.root, "meta/tasks.parquet"))


def _numeric_stats(episode: dict) -> dict:
    return {k: _stats(np.asarray(v).reshape(len(v), -1)) for k, v in episode.items()
            if k != "task" and not _is_camera(np.asarray(v))}


# codebase_version -> layout writer
WRITERS = {"v2.1": _write_v21, "v3.0": _write_v30}


def write_lerobot_dataset(root: str, episodes: Sequence[dict], *, fps: int, version: str = "v3.0", video: bool = True,
                          codec: str | None = None, gop: int = 2, chunks_size: int = 1000, episodes_per_file: int = 4,
                          splits: dict | None = None, robot_type: str = "unknown") -> str:
    """Writes ``episodes`` as a LeRobotDataset of ``version`` ("v2.1" | "v3.0") under ``root``; returns ``root``.

    ``codec``: a PyAV encoder (default :func:`default_codec`); ``gop``: frames between keyframes (LeRobot's 2);
    ``chunks_size``: files per chunk folder; ``episodes_per_file``: v3.0 only.
    """
    if version not in WRITERS:
        raise ValueError(f"version {version!r} is not one of {sorted(WRITERS)}")
    codec = codec or default_codec()
    episodes = [{k: (v if k == "task" else np.asarray(v)) for k, v in ep.items()} for ep in episodes]
    features = _features(episodes[0], fps, video, codec)
    tasks = {t: i for i, t in enumerate(dict.fromkeys(ep["task"] for ep in episodes))}
    tables, first = [], 0
    for e, ep in enumerate(episodes):
        tables.append(_frames_table(ep, e, first, tasks[ep["task"]], features, fps))
        first += tables[-1].num_rows
    videos = [k for k, f in features.items() if f["dtype"] == "video"]
    info = {"codebase_version": version, "robot_type": robot_type, "total_episodes": len(episodes),
            "total_frames": first, "total_tasks": len(tasks), "total_videos": len(episodes) * len(videos),
            "chunks_size": chunks_size, "fps": fps, "splits": splits or {"train": f"0:{len(episodes)}"},
            "features": features}
    WRITERS[version](_Plan(root, episodes, tables, videos, info, tasks, codec, gop, episodes_per_file))
    _write_json(root, "meta/info.json", info)
    values = {k: np.concatenate([ep[k].reshape(len(ep[k]), -1) for ep in episodes])
              for k in _numeric_stats(episodes[0])}
    _write_json(root, "meta/stats.json", {k: _stats(v) for k, v in values.items()})
    return root


def smooth_frames(n: int, seed: int, size: int = 64) -> np.ndarray:
    """uint8 [n, size, size, 3]: low-frequency color gradients drifting ~10 levels (mean over pixels and channels)
    per frame: smooth, so a codec's error stays small, while neighbouring frames stay apart."""
    y, x = np.mgrid[0:size, 0:size] / size
    t = np.arange(n)[:, None, None]
    r = 128 + 80 * np.sin(2 * np.pi * (0.5 * x + 0.05 * t + 0.1 * seed))
    g = 128 + 80 * np.cos(2 * np.pi * (0.5 * y + 0.03 * t))
    b = 100 + 60 * x * y + 3 * t
    return np.stack([r, g, b], axis=-1).clip(0, 255).astype(np.uint8)


def synthetic_episodes(lengths: Sequence[int], cameras: Sequence[str], numeric: dict, tasks: Sequence[str],
                       size: int = 64, seed: int = 0) -> list[dict]:
    """Episodes for :func:`write_lerobot_dataset`: ``smooth_frames`` per camera, standard-normal float32 values per
    ``numeric`` feature ({name: dim}), task ``tasks[e % len(tasks)]``: a smoke test of the reading path, nothing
    to learn."""
    rng = np.random.default_rng(seed)
    episodes = []
    for e, n in enumerate(lengths):
        episode = {"task": tasks[e % len(tasks)]}
        episode.update({k: rng.normal(size=(n, d)).astype(np.float32) for k, d in numeric.items()})
        episode.update({k: smooth_frames(n, len(cameras) * e + c, size) for c, k in enumerate(cameras)})
        episodes.append(episode)
    return episodes


def write_synthetic_aloha(root: str, version: str = "v3.0", episodes: int = 20, length: int = 50,
                          image_size: int = 64, seed: int = 0) -> str:
    """A synthetic dataset in the layout of spec ``lerobot_aloha`` (mixture ``lerobot``): 3 video cameras, 14-D
    state and action, 50 fps, the last tenth of the episodes in split "val". Written to ``root``.tmp, then renamed."""
    import shutil

    from vla_jax.data.specs import get_spec

    spec = get_spec("lerobot_aloha")
    data = synthetic_episodes([length] * episodes, [k for k in spec.image_keys if k],
                              {"observation.state": spec.state_dim, "action": spec.action_dim},
                              ("pick up the red block", "put the red block in the bowl"), image_size, seed)
    val = max(1, episodes // 10)
    tmp = f"{root}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write_lerobot_dataset(tmp, data, fps=int(spec.control_hz), version=version, robot_type="aloha",
                          splits={"train": f"0:{episodes - val}", "val": f"{episodes - val}:{episodes}"})
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root
