"""TFDS builders (array_record) for RLDS robot episodes and web vision-language examples.

The RLDS schema follows Open X-Embodiment: an episode is ``{"steps": Dataset(step), "episode_metadata": {...}}``
with step = ``observation{<camera>: Image, state}``, ``action``, ``language_instruction``, ``reward``,
``discount``, ``is_first``, ``is_last``, ``is_terminal``. Images are stored as JPEG like the OXE releases.

Builders here take their examples from Python callables, so the same code writes the simulated tabletop
datasets (generate.py), the tiny ``bridge_dataset``-layout fixture (:func:`write_tiny_bridge_dataset`) and
tiny datasets in the step layout of any OXE release with a spec (:func:`write_tiny_oxe_dataset`).
Encoded image bytes may be passed instead of arrays (cheaper: workers encode in parallel).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from typing import Callable, Iterable

import numpy as np

DATASET_VERSION = "1.0.0"


def jpeg_bytes(image: np.ndarray, quality: int = 92) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def rlds_features(cameras: dict, state_dim: int, action_dim: int, metadata: dict | None = None,
                  state_key: str = "state", step_texts: tuple[str, ...] = ()):
    """FeaturesDict of an RLDS episode. ``cameras``: name -> (H, W); ``metadata``: name -> feature;
    ``step_texts``: extra per-step text features (e.g. "target_location", see vla_jax.sim.grounding_answers)."""
    import tensorflow_datasets as tfds

    observation = {name: tfds.features.Image(shape=(h, w, 3), encoding_format="jpeg") for name, (h, w) in cameras.items()}
    observation[state_key] = tfds.features.Tensor(shape=(state_dim,), dtype=np.float32)
    step = {
        "observation": tfds.features.FeaturesDict(observation),
        "action": tfds.features.Tensor(shape=(action_dim,), dtype=np.float32),
        "language_instruction": tfds.features.Text(),
        "reward": tfds.features.Scalar(dtype=np.float32),
        "discount": tfds.features.Scalar(dtype=np.float32),
        "is_first": tfds.features.Scalar(dtype=np.bool_),
        "is_last": tfds.features.Scalar(dtype=np.bool_),
        "is_terminal": tfds.features.Scalar(dtype=np.bool_),
        **{name: tfds.features.Text() for name in step_texts},
    }
    return tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset(step),
        "episode_metadata": tfds.features.FeaturesDict(metadata or {"episode_id": tfds.features.Scalar(dtype=np.int64)}),
    })


def web_features(image_size: int):
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(image_size, image_size, 3), encoding_format="jpeg"),
        "caption": tfds.features.Text(),
        "qa": tfds.features.Sequence({"question": tfds.features.Text(), "answer": tfds.features.Text()}),
    })


def make_builder(name: str, features, splits: dict[str, Callable[[], Iterable]], data_dir: str,
                 description: str = "", metadata: dict | None = None, file_format: str = "array_record"):
    """A GeneratorBasedBuilder instance (array_record files by default); ``splits[s]()`` yields (key, example)."""
    import tensorflow_datasets as tfds

    class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(DATASET_VERSION)
        RELEASE_NOTES = {DATASET_VERSION: "Initial release."}
        code_path = None  # no checksums file next to the code (and no importlib_resources lookup)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description=description,
                features=features,
                metadata=tfds.core.MetadataDict(metadata or {}),
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(fn) for split, fn in splits.items()}

        def _generate_examples(self, fn):
            yield from fn()

        # tfds prints "Downloading and preparing ..." with the temp path; write_dataset reports instead.
        def _log_download_bytes(self):
            pass

        def _log_download_done(self):
            pass

    _Builder.name = name
    return _Builder(data_dir=data_dir, file_format=file_format)


def _remove_stale_temp_dirs(out_dir: str, name: str) -> None:
    """Removes ``.tmp-<name>-<pid>-*`` dirs left by killed runs (their pid is gone)."""
    for entry in os.listdir(out_dir):
        prefix = f".tmp-{name}-"
        if not entry.startswith(prefix):
            continue
        pid = entry[len(prefix):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue  # another live run is writing it
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        shutil.rmtree(os.path.join(out_dir, entry), ignore_errors=True)


def write_dataset(out_dir: str, name: str, features, splits: dict, description: str = "",
                  metadata: dict | None = None, file_format: str = "array_record") -> str:
    """Writes dataset ``name`` into ``out_dir/name`` atomically (temp dir + rename); returns its versioned dir.

    A killed run leaves only a ``.tmp-*`` directory behind (removed by the next run), never a half
    dataset at ``out_dir/name``.
    """
    os.makedirs(out_dir, exist_ok=True)
    _remove_stale_temp_dirs(out_dir, name)
    tmp = os.path.join(out_dir, f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        builder = make_builder(name, features, splits, tmp, description, metadata, file_format)
        builder.download_and_prepare(download_dir=os.path.join(tmp, "downloads"))
        final = os.path.join(out_dir, name)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(os.path.join(tmp, name), final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return os.path.join(out_dir, name, DATASET_VERSION)


def is_complete(out_dir: str, name: str, splits=("train", "val")) -> bool:
    """True if ``out_dir/name`` holds a finished dataset with all ``splits`` (what write_dataset renames in)."""
    info_file = os.path.join(out_dir, name, DATASET_VERSION, "dataset_info.json")
    if not os.path.isfile(info_file):
        return False
    try:
        with open(info_file) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    have = {s.get("name") for s in info.get("splits", [])}
    return set(splits) <= have


def write_tiny_bridge_dataset(out_dir: str, num_episodes: int = 6, num_val_episodes: int = 2, image_size: int = 64,
                              seed: int = 0, file_format: str = "array_record") -> str:
    """Writes a tiny dataset in the real ``bridge_dataset`` (BridgeData V2) step layout: nested
    ``observation/image_0`` (+ ``image_1``), 7-D ``observation/state``, 7-D ``action``, step-level
    ``language_instruction``; returns the dataset root ``out_dir/bridge_dataset``.

    Content is synthetic (a colored square moving on a gray table); use it to exercise loading a
    real-OXE-layout dataset through config alone.
    """
    import tensorflow_datasets as tfds

    instructions = ("put the carrot on the plate", "open the drawer", "wipe the table with the towel")

    def episodes(count, offset):
        def gen():
            rng = np.random.default_rng(seed + offset)
            for e in range(count):
                length = int(rng.integers(8, 16))
                text = instructions[e % len(instructions)]
                pos = rng.uniform(0.2, 0.8, size=2)
                steps = []
                for t in range(length):
                    action = np.concatenate([rng.normal(0, 0.01, 6), [float(t > length // 2)]]).astype(np.float32)
                    pos = np.clip(pos + action[:2] * 5, 0.1, 0.9)
                    state = np.concatenate([pos, [0.1], rng.normal(0, 0.1, 3), [action[6]]]).astype(np.float32)
                    image = np.full((image_size, image_size, 3), 110, np.uint8)
                    c = (pos * image_size).astype(int)
                    image[max(c[1] - 4, 0): c[1] + 4, max(c[0] - 4, 0): c[0] + 4] = (200, 60, 40)
                    steps.append({
                        "observation": {"image_0": jpeg_bytes(image), "image_1": jpeg_bytes(image[:, ::-1]),
                                        "state": state},
                        "action": action,
                        "language_instruction": text,
                        "reward": np.float32(t == length - 1),
                        "discount": np.float32(1.0),
                        "is_first": t == 0,
                        "is_last": t == length - 1,
                        "is_terminal": t == length - 1,
                    })
                yield e, {"steps": steps, "episode_metadata": {"file_path": f"synthetic/{offset}/{e}", "episode_id": e}}

        return gen

    features = rlds_features(
        {"image_0": (image_size, image_size), "image_1": (image_size, image_size)}, state_dim=7, action_dim=7,
        metadata={"file_path": tfds.features.Text(), "episode_id": tfds.features.Scalar(dtype=np.int64)},
    )
    write_dataset(out_dir, "bridge_dataset", features,
                  {"train": episodes(num_episodes, 0), "val": episodes(num_val_episodes, 10_000)},
                  description="Tiny synthetic dataset in the bridge_dataset (BridgeData V2) layout.",
                  file_format=file_format)
    return os.path.join(out_dir, "bridge_dataset")


def _tiny_feature(desc: str, image_size: int):
    """TFDS feature of one :data:`vla_jax.data.oxe_specs.STEP_FEATURES` description, images at ``image_size``."""
    import tensorflow_datasets as tfds

    words = desc.split()
    if words[0] == "image":
        return tfds.features.Image(shape=(image_size, image_size, 3), encoding_format="jpeg")
    if words[0] == "text":
        return tfds.features.Text()
    if words[0] == "codes":
        return tfds.features.Tensor(shape=(int(words[1]),), dtype=np.int32)
    encoding = "zlib" if words[0] == "zlib" else "none"
    words = words[1:] if encoding == "zlib" else words
    shape = tuple(int(n) for n in words[1:])
    return tfds.features.Tensor(shape=shape, dtype=np.dtype(words[0]), encoding=encoding)


def _tiny_value(desc: str, rng: np.random.Generator, image_size: int, text: str):
    words = desc.split()
    if words[0] == "image":
        return jpeg_bytes(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8))
    if words[0] == "text":
        return text
    if words[0] == "codes":
        return np.pad(np.array([ord(c) for c in text], np.int32), (0, int(words[1]) - len(text)))
    words = words[1:] if words[0] == "zlib" else words
    dtype, shape = np.dtype(words[0]), tuple(int(n) for n in words[1:])
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if dtype.kind == "i":
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.uniform(-1.0, 1.0, shape).astype(dtype)


def _nest(flat: dict) -> dict:
    """{"a/b": x} -> {"a": {"b": x}} (TFDS flattens nested FeaturesDicts back to "a/b")."""
    out: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def write_tiny_oxe_dataset(out_dir: str, name: str, *, num_episodes: int = 3, num_val_episodes: int = 1,
                           num_steps: int = 6, image_size: int = 32, values: dict | None = None, seed: int = 0) -> str:
    """Writes a tiny dataset ``out_dir/name/1.0.0`` (train and val splits) in the step layout the OXE
    release of ``name`` stores (:data:`vla_jax.data.oxe_specs.STEP_FEATURES`: the keys its spec reads,
    their dtypes and shapes, zlib encoding included; images at ``image_size``) plus the RLDS ``is_first``
    / ``is_last`` / ``is_terminal`` / ``reward``; returns the dataset root ``out_dir/name``.

    Values are random (uniform in [-1, 1], 0 / 1 for ints and bools, random-pixel JPEGs, instruction
    "task <episode>", also as code points for ``codes`` keys), except ``values[key](episode, step)`` for
    the keys it names.
    """
    import tensorflow_datasets as tfds

    from vla_jax.data.oxe_specs import STEP_FEATURES

    layout, values = STEP_FEATURES[name], values or {}
    t = tfds.features
    step = {key: _tiny_feature(desc, image_size) for key, desc in layout.items()}
    step.update(is_first=t.Scalar(dtype=np.bool_), is_last=t.Scalar(dtype=np.bool_),
                is_terminal=t.Scalar(dtype=np.bool_), reward=t.Scalar(dtype=np.float32))

    def to_feature_dicts(node):
        return t.FeaturesDict({k: to_feature_dicts(v) if isinstance(v, dict) else v for k, v in node.items()})

    def episodes(count, offset):
        def gen():
            rng = np.random.default_rng(seed + offset)
            for e in range(offset, offset + count):
                steps = []
                for s in range(num_steps):
                    raw = {key: values[key](e, s) if key in values else _tiny_value(desc, rng, image_size, f"task {e}")
                           for key, desc in layout.items()}
                    steps.append({**_nest(raw), "is_first": s == 0, "is_last": s == num_steps - 1,
                                  "is_terminal": s == num_steps - 1, "reward": np.float32(s == num_steps - 1)})
                yield e, {"steps": steps}

        return gen

    features = t.FeaturesDict({"steps": t.Dataset(to_feature_dicts(_nest(step)))})
    write_dataset(out_dir, name, features, {"train": episodes(num_episodes, 0),
                                            "val": episodes(num_val_episodes, 10_000)},
                  description=f"Tiny random dataset in the step layout of the OXE release {name}.")
    return os.path.join(out_dir, name)
