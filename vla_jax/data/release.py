"""A TFDS dataset directory as released: its splits' record files, their records in order, a content
digest, and a view of one RLDS episode.

Open X-Embodiment releases are TFRecord (``<name>-<split>.tfrecord-XXXXX-of-YYYYY`` next to
``dataset_info.json`` and ``features.json``); tools/generate_data.py writes array_record. Both hold
one serialized ``tf.train.Example`` per episode (vla_jax/data/records.py). Only the prepare step
(vla_jax/data/prepare.py) reads records from here; the trainer reads the prepared copy and uses
:func:`source_digest` to check that the copy still matches a local source. Paths may be local or
``gs://`` (through ``etils.epath`` and TensorFlow's file system; the latter is untested here).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Callable, Iterable, Iterator

from vla_jax.data import columns, records
from vla_jax.data.errors import DataError

GENERATE_HINT = "generate it with `python tools/generate_data.py --out_dir DIR` or point config.data at it"
HEAD_BYTES = 64 * 1024  # read from the start of each file by content_digest
TAIL_BYTES = 192 * 1024  # read from the end: array_record's index, postscript and block padding
RECORD_FILE_PATTERNS = ("*.tfrecord-*", "*.array_record-*")


def _path(path: str):
    from etils import epath

    return epath.Path(path)


def is_remote(path: str) -> bool:
    return "://" in str(path)


def resolve_dataset_dir(path: str, dataset: str) -> str:
    """The versioned TFDS directory (holding dataset_info.json) of ``path``: ``path`` itself or, for a
    dataset root (``.../bridge_dataset``), its highest version."""
    root = _path(path)
    if (root / "dataset_info.json").is_file():
        return str(root)
    if not root.is_dir():
        raise DataError(f"dataset '{dataset}': path {path} does not exist; {GENERATE_HINT}")
    versions = [d.name for d in root.iterdir() if (d / "dataset_info.json").is_file()]
    if not versions:
        raise DataError(f"dataset '{dataset}': {path} holds no TFDS dataset (no */dataset_info.json); {GENERATE_HINT}")

    def version_key(v):
        return tuple(int(p) if p.isdigit() else -1 for p in v.split("."))

    return str(root / max(versions, key=version_key))


@dataclasses.dataclass(frozen=True)
class Shard:
    file: str
    num_records: int


@dataclasses.dataclass(frozen=True)
class Release:
    """What dataset_info.json says about a versioned directory."""

    path: str  # the versioned directory
    name: str
    version: str
    file_format: str  # a key of READERS
    splits: dict  # split -> tuple[Shard, ...] in record order


def open_release(path: str, dataset: str) -> Release:
    import tensorflow_datasets as tfds

    version_dir = resolve_dataset_dir(path, dataset)
    info = tfds.builder_from_directory(version_dir).info
    file_format = str(info.file_format).split(".")[-1].lower()  # FileFormat.TFRECORD -> "tfrecord"
    if file_format not in READERS:
        raise DataError(f"dataset '{dataset}': {version_dir} is stored as {file_format}; readable: {sorted(READERS)}")
    splits = {name: tuple(Shard(str(f), int(n)) for f, n in zip(split.filepaths, split.shard_lengths))
              for name, split in info.splits.items()}
    return Release(version_dir, info.name, str(info.version), file_format, splits)


def _tfrecord_records(file: str, dataset: str) -> Iterator[bytes]:
    """Records of a TFRecord file through ``tf.data`` (which verifies every length and data CRC)."""
    import tensorflow as tf

    try:
        for record in tf.data.TFRecordDataset(file).as_numpy_iterator():
            yield record
    except tf.errors.DataLossError as e:
        found = re.search(r"(corrupted|truncated) record at \d+", str(e))
        what = found.group(0) if found else str(e).splitlines()[0]
        raise DataError(f"dataset '{dataset}': {file} is damaged ({what}); download this file again") from None


def _array_record_records(file: str, dataset: str, chunk: int = 16) -> Iterator[bytes]:
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(file))
    try:
        total = reader.num_records()
        for start in range(0, total, chunk):
            yield from reader.read(list(range(start, min(start + chunk, total))))
    finally:
        reader.close()


READERS: dict[str, Callable[[str, str], Iterator[bytes]]] = {
    "tfrecord": _tfrecord_records,
    "array_record": _array_record_records,
}


def iter_records(shard: Shard, file_format: str, dataset: str) -> Iterator[bytes]:
    """The serialized records of one shard in order; one-line DataError for a damaged file or a count
    other than dataset_info.json's."""
    count = 0
    for record in READERS[file_format](shard.file, dataset):
        count += 1
        yield record
    if count != shard.num_records:
        raise DataError(f"dataset '{dataset}': {shard.file} holds {count} records, dataset_info.json says "
                        f"{shard.num_records}; download this file again")


def content_digest(files: Iterable[str]) -> str:
    """Hash of files' contents from a bounded read of each (no record is parsed or decoded).

    Per file: its name, size, first :data:`HEAD_BYTES` and last :data:`TAIL_BYTES`. The tail of an
    array_record file holds its index (every record's offset), the head its first records, so
    regenerated episodes change the digest even when the counts stay the same.
    """
    digest = hashlib.sha256()
    for file in files:
        path = _path(file)
        size = path.stat().length
        digest.update(f"{path.name}:{size}:".encode())
        with path.open("rb") as f:
            digest.update(f.read(HEAD_BYTES))
            if size > HEAD_BYTES:
                f.seek(max(size - TAIL_BYTES, HEAD_BYTES))
                digest.update(f.read())
    return digest.hexdigest()


def source_digest(version_dir: str) -> str:
    """:func:`content_digest` of a versioned directory's dataset_info.json and record files."""
    root = _path(version_dir)
    files = sorted({str(f) for pattern in RECORD_FILE_PATTERNS for f in root.glob(pattern)})
    return content_digest([str(root / "dataset_info.json")] + files)


class Episode:
    """One parsed RLDS episode; accessors decode only the step keys they are asked for."""

    def __init__(self, record: bytes, dataset: str):
        self.fmap = records.parse_record(record)
        self.dataset = dataset
        if "steps/is_first" not in self.fmap:
            raise DataError(f"dataset '{dataset}': records have no 'steps/is_first'; is this an RLDS dataset?")
        self.num_steps = len(records.feature_list(self.fmap, "steps/is_first", dataset))

    def step_keys(self) -> list[str]:
        """Every step key, relative to one step (``observation/image_0``)."""
        return sorted(k[len("steps/"):] for k in self.fmap.keys() if k.startswith("steps/"))

    def has(self, key: str) -> bool:
        return "steps/" + key in self.fmap

    def column(self, key: str):
        """The raw values of step key ``key`` over the episode (flat; what spec column expressions read)."""
        return records.feature_list(self.fmap, "steps/" + key, self.dataset)

    def values(self, key: str) -> list:
        """The T per-step values of a bytes step key (images, text)."""
        values = self.column(key)
        if len(values) != self.num_steps:
            raise DataError(f"dataset '{self.dataset}': key '{key}' has {len(values)} values for {self.num_steps} steps")
        return list(values)


def check_robot_layout(episode: Episode, spec) -> None:
    """One line if an episode does not match its spec: a camera or key missing, other dims, a bad instruction."""
    name = episode.dataset
    for slot, key in enumerate(spec.image_keys):
        if key is not None and not episode.has(key):
            images = sorted(k for k in episode.step_keys() if "image" in k or "cam" in k)
            raise DataError(
                f"dataset '{name}': image key '{key}' (camera slot {slot}, spec '{spec.name}') is missing "
                f"from the steps; image-like keys present: {images}"
            )
    for what, keys, rows, dim in (
        ("action", spec.action_keys, spec.action_rows, spec.action_dim),
        ("state", spec.state_keys, spec.state_rows, spec.state_dim),
    ):
        values = for_dataset(name, rows, episode.column, episode.num_steps)
        if values.shape[-1] != dim:
            raise DataError(
                f"dataset '{name}': {what} keys {list(keys)} give {values.shape[-1]}-D {what}s but spec "
                f"'{spec.name}' expects {dim}-D"
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
