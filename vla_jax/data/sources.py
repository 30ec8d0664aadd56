"""Random-access reading of TFDS (array_record) datasets, decoding only what is asked for.

An RLDS episode is one record: a ``tf.train.Example`` whose step features are
flattened to ``steps/<key>`` lists with one entry (or one row) per step. Readers
here fetch the raw record through ``tfds.builder_from_directory(dir).as_data_source``
(random access, what grain wants) and pull out single keys without decoding the
rest: a training sample decodes the JPEGs of its one step only; statistics read
state and action floats and never touch an image.

Readers open their data source lazily, so they pickle cheaply into grain workers.
"""

from __future__ import annotations

import io
import os

import numpy as np

from vla_jax.data import columns
from vla_jax.data.errors import DataError

GENERATE_HINT = "generate it with `python tools/generate_data.py --out_dir DIR` or point config.data at it"


def resolve_dataset_dir(path: str, dataset: str) -> str:
    """Returns the versioned TFDS directory (holding dataset_info.json) for ``path``.

    ``path`` may be the versioned directory itself (``.../bridge_dataset/1.0.0``) or the
    dataset root (``.../bridge_dataset``), in which case the highest version is used.
    """
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "dataset_info.json")):
        return path
    if not os.path.isdir(path):
        raise DataError(f"dataset '{dataset}': path {path} does not exist; {GENERATE_HINT}")
    versions = [d for d in os.listdir(path) if os.path.isfile(os.path.join(path, d, "dataset_info.json"))]
    if not versions:
        raise DataError(f"dataset '{dataset}': {path} holds no TFDS dataset (no */dataset_info.json); {GENERATE_HINT}")

    def version_key(v):
        return tuple(int(p) if p.isdigit() else -1 for p in v.split("."))

    return os.path.join(path, max(versions, key=version_key))


def open_builder(path: str, dataset: str):
    import tensorflow_datasets as tfds

    return tfds.builder_from_directory(resolve_dataset_dir(path, dataset))


def _raw_source(path: str, split: str, dataset: str):
    import tensorflow_datasets as tfds

    builder = open_builder(path, dataset)
    if split not in builder.info.splits:
        raise DataError(
            f"dataset '{dataset}': split '{split}' not found in {builder.data_dir} "
            f"(splits: {sorted(builder.info.splits)})"
        )
    if str(builder.info.file_format).split(".")[-1].lower() not in ("array_record", "arrayrecord"):
        raise DataError(
            f"dataset '{dataset}': {builder.data_dir} is stored as {builder.info.file_format}, random access needs "
            f"array_record; convert it with `tfds convert_format --dataset_dir={builder.data_dir} "
            f"--out_file_format=array_record` (see docs/data.md)"
        )
    return builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)


def parse_record(record: bytes):
    """Parses one serialized example; returns the protobuf feature map (nothing is decoded)."""
    from tensorflow_datasets.proto import tf_example_pb2

    return tf_example_pb2.Example.FromString(record).features.feature


def feature_list(fmap, key: str, dataset: str):
    """The raw value list of flat feature ``key`` (a float, int64 or bytes repeated field)."""
    if key not in fmap:
        available = ", ".join(sorted(fmap.keys()))
        raise DataError(f"dataset '{dataset}': key '{key}' not found in the records (available: {available})")
    feature = fmap[key]
    kind = feature.WhichOneof("kind")
    if kind is None:
        return []
    return getattr(feature, kind).value


def decode_image(data: bytes):
    """Decodes JPEG/PNG bytes into an RGB ``PIL.Image``."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def to_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RecordReader:
    """Lazily opened raw-record reader for one split of one dataset (picklable)."""

    def __init__(self, path: str, split: str, dataset: str):
        self.path = resolve_dataset_dir(path, dataset)
        self.split = split
        self.dataset = dataset
        self._source = None
        self._len = len(self._open())

    def _open(self):
        if self._source is None:
            self._source = _raw_source(self.path, self.split, self.dataset)
        return self._source

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_source"] = None
        return state

    def __len__(self) -> int:
        return self._len

    def read(self, index: int):
        """Feature map of record ``index``."""
        return parse_record(self._open()[int(index)])


class Episode:
    """One parsed RLDS episode; accessors decode only the keys they are asked for."""

    def __init__(self, fmap, dataset: str):
        self.fmap = fmap
        self.dataset = dataset
        if "steps/is_first" in fmap:
            self.num_steps = len(feature_list(fmap, "steps/is_first", dataset))
        else:
            raise DataError(f"dataset '{dataset}': records have no 'steps/is_first'; is this an RLDS dataset?")

    def has(self, key: str) -> bool:
        return "steps/" + key in self.fmap

    def column(self, key: str):
        """The raw values of step key ``key`` over the episode (flat; what spec column expressions read)."""
        return feature_list(self.fmap, "steps/" + key, self.dataset)

    def step_bytes(self, key: str, t: int) -> bytes:
        return feature_list(self.fmap, "steps/" + key, self.dataset)[t]

    def step_text(self, key: str, t: int) -> str:
        return to_text(self.step_bytes(key, t))


def episode_lengths(reader: RecordReader, indices=None) -> np.ndarray:
    """Number of steps of each episode (reads each record once)."""
    indices = range(len(reader)) if indices is None else indices
    return np.asarray([Episode(reader.read(i), reader.dataset).num_steps for i in indices], dtype=np.int64)


def check_robot_layout(episode: Episode, spec, max_action_dim: int | None, max_state_dim: int | None) -> None:
    """Raises one clear line if a dataset's records do not match its spec (checked once at start-up)."""
    name = episode.dataset
    for slot, key in enumerate(spec.image_keys):
        if key is not None and not episode.has(key):
            images = sorted(k[len("steps/"):] for k in episode.fmap.keys() if "image" in k or "cam" in k)
            raise DataError(
                f"dataset '{name}': image key '{key}' (camera slot {slot}, spec '{spec.name}') is missing "
                f"from the steps; image-like keys present: {images}"
            )
    for what, keys, rows, dim, cap in (
        ("action", spec.action_keys, spec.action_rows, spec.action_dim, max_action_dim),
        ("state", spec.state_keys, spec.state_rows, spec.state_dim, max_state_dim),
    ):
        values = for_dataset(name, rows, episode.column, episode.num_steps)
        if values.shape[-1] != dim:
            raise DataError(
                f"dataset '{name}': {what} keys {list(keys)} give {values.shape[-1]}-D {what}s but spec "
                f"'{spec.name}' expects {dim}-D"
            )
        if cap is not None and dim > cap:
            raise DataError(
                f"dataset '{name}': {what} keys {list(keys)} are {dim}-D, more than config.model.max_{what}_dim={cap}"
            )
    for key in columns.keys(spec.instruction_key):
        if not episode.has(key.path):
            raise DataError(f"dataset '{name}': instruction key '{key.path}' is missing from the steps")
    for_dataset(name, spec.instruction, episode.column, episode.num_steps, 0)


def for_dataset(name: str, fn, *args):
    """``fn(*args)``; a DataError that does not name a dataset gets ``dataset '<name>': `` in front (spec
    column expressions report the key, not the dataset)."""
    try:
        return fn(*args)
    except DataError as e:
        if str(e).startswith("dataset '"):
            raise
        raise DataError(f"dataset '{name}': {e}") from None
