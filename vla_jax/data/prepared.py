"""The prepared layout: what the trainer reads (vla_jax/data/prepare.py writes it).

One directory per dataset, ``<config.data.prepared_dir>/<dataset>/``::

    manifest.json                          kind, source (dir, versioned path, digest), stored keys, splits
    <split>/frames-XXXXX.array_record      robot: one record per step (transition), in episode order:
                                           that step's camera bytes + its episode and step index
    <split>/episode_lengths.npy            robot: [E] int64
    <split>/<key>.npy                      robot: [N, D] float32 per stored numeric step key ("/" -> ".")
    <split>/<key>.ids.npy, <key>.values.json
                                           robot: [N] int32 index into the distinct strings of a text key
    <split>/examples-XXXXX.array_record    web: the source's example records, unchanged

Transition ``g`` of a split (``g = offset of its episode + step``) is frame record ``g`` and row ``g``
of every column, so a sample reads one frame record and a few rows whatever its episode's length.
Robot datasets store the keys their spec reads (cameras, state, action, instruction, grounding text).
Columns are memory-mapped and frame files opened lazily, so splits pickle cheaply into grain workers.
"""

from __future__ import annotations

import json
import os

import numpy as np

from vla_jax.data import records, release
from vla_jax.data.errors import DataError

FORMAT = 1  # of this layout; in the statistics fingerprint
MANIFEST = "manifest.json"
PREPARE_HINT = "run `python tools/prepare_data.py --config=<your training config>`"


def column_file(key: str) -> str:
    return key.replace("/", ".") + ".npy"


def text_files(key: str) -> tuple[str, str]:
    stem = key.replace("/", ".")
    return stem + ".ids.npy", stem + ".values.json"


def frame_file(index: int) -> str:
    return f"frames-{index:05d}.array_record"


def example_file(index: int) -> str:
    return f"examples-{index:05d}.array_record"


def read_manifest(path: str, dataset: str) -> dict:
    """The manifest of the prepared copy at ``path``; one line saying how to prepare it if missing."""
    file = os.path.join(path, MANIFEST)
    if not os.path.isfile(file):
        raise DataError(f"dataset '{dataset}': no prepared copy at {path}; {PREPARE_HINT}")
    with open(file) as f:
        manifest = json.load(f)
    if manifest.get("format") != FORMAT:
        raise DataError(f"dataset '{dataset}': {path} was prepared in layout format {manifest.get('format')}, this "
                        f"code reads format {FORMAT}; {PREPARE_HINT}")
    return manifest


def write_manifest(path: str, manifest: dict) -> None:
    tmp = os.path.join(path, f"{MANIFEST}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(path, MANIFEST))


def source_entry(source_dir: str, dataset: str) -> dict:
    """The manifest's ``source``: the configured dir, its versioned directory and that one's digest."""
    version_dir = release.resolve_dataset_dir(source_dir, dataset)
    return {"dir": str(source_dir), "path": version_dir, "digest": release.source_digest(version_dir)}


def open_checked(source_dir: str, path: str, dataset: str, kind: str) -> dict:
    """The manifest of the prepared copy at ``path`` after checking it against its source ``source_dir``.

    The copy must have been made from ``source_dir``; a local source that still exists must have the
    digest recorded at preparation (a source deleted after preparing is fine, a remote one is not read).
    Every failure is one line naming the command to run.
    """
    local = not release.is_remote(source_dir)
    missing = local and not os.path.exists(source_dir)
    if missing and not os.path.isfile(os.path.join(path, MANIFEST)):
        raise DataError(f"dataset '{dataset}': path {source_dir} does not exist; {release.GENERATE_HINT}")
    manifest = read_manifest(path, dataset)
    if manifest["kind"] != kind:
        raise DataError(f"dataset '{dataset}': {path} holds a prepared {manifest['kind']} dataset, not {kind}; "
                        f"{PREPARE_HINT}")
    recorded = manifest["source"]
    if recorded["dir"] != str(source_dir):
        if missing:
            raise DataError(f"dataset '{dataset}': path {source_dir} does not exist; {release.GENERATE_HINT}")
        raise DataError(f"dataset '{dataset}': {path} was prepared from {recorded['dir']}, not {source_dir}; "
                        f"{PREPARE_HINT}")
    if local and not missing and source_entry(source_dir, dataset) != recorded:
        raise DataError(f"dataset '{dataset}': {source_dir} changed since it was prepared into {path}; {PREPARE_HINT}")
    return manifest


def split_info(manifest: dict, split: str, dataset: str, path: str) -> dict:
    if split not in manifest["splits"]:
        raise DataError(f"dataset '{dataset}': split '{split}' not found in {path} "
                        f"(splits: {sorted(manifest['splits'])})")
    return manifest["splits"][split]


class _LazyFiles:
    """Record files of one split, opened on first use in each process (pickles as paths)."""

    def __init__(self, directory: str, files: list):
        # "path[0:n]" spares ArrayRecordDataSource opening every file to count its records.
        self._paths = [f"{os.path.join(directory, name)}[0:{count}]" for name, count in files]
        self._source = None

    def __getitem__(self, index: int) -> bytes:
        if self._source is None:
            import grain

            self._source = grain.sources.ArrayRecordDataSource(self._paths)
        return self._source[index]

    def __getstate__(self):
        return {"_paths": self._paths, "_source": None}


class RobotSplit:
    """One prepared robot split: per-episode lengths, frame records and step columns, all indexed by
    the transition index ``g`` of the split (episodes in record order, steps in order)."""

    def __init__(self, path: str, manifest: dict, split: str, dataset: str):
        info = split_info(manifest, split, dataset, path)
        self.dir = os.path.join(path, split)
        self.dataset = dataset
        self.images = tuple(manifest["images"])
        self.lengths = np.load(os.path.join(self.dir, "episode_lengths.npy"))  # [E]
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)  # [E] first g
        self.num_transitions = int(info["transitions"])
        self.frames = _LazyFiles(self.dir, info["files"])
        self._columns: dict = {}
        self._texts: dict = {}

    def __getstate__(self):
        return {**self.__dict__, "_columns": {}, "_texts": {}}

    def frame(self, g: int) -> dict:
        """{camera key: encoded image bytes} of transition ``g`` (reads its one frame record)."""
        fmap = records.parse_record(self.frames[g])
        return {key: fmap[key].bytes_list.value[0] for key in self.images}

    def column(self, key: str) -> np.ndarray:
        """[N, D] float32 (memory-mapped) numeric step key."""
        if key not in self._columns:
            self._columns[key] = np.load(os.path.join(self.dir, column_file(key)), mmap_mode="r")
        return self._columns[key]

    def rows(self, keys, start: int, stop: int) -> np.ndarray:
        """[stop - start, sum of dims] float32: rows [start, stop) of ``keys`` concatenated."""
        parts = [np.asarray(self.column(k)[start:stop], np.float32) for k in keys]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)

    def text(self, key: str, g: int) -> str:
        if key not in self._texts:
            ids_file, values_file = text_files(key)
            with open(os.path.join(self.dir, values_file)) as f:
                values = json.load(f)
            self._texts[key] = (np.load(os.path.join(self.dir, ids_file), mmap_mode="r"), values)
        ids, values = self._texts[key]
        return values[int(ids[g])]


class WebSplit:
    """One prepared web split: example ``i`` is record ``i`` (the source's serialized example)."""

    def __init__(self, path: str, manifest: dict, split: str, dataset: str):
        info = split_info(manifest, split, dataset, path)
        self.num_examples = int(info["examples"])
        self.records = _LazyFiles(os.path.join(path, split), info["files"])

    def __len__(self) -> int:
        return self.num_examples

    def read(self, index: int):
        """Feature map of example ``index``."""
        return records.parse_record(self.records[index])


# ----------------------------------------------------------------------------- robot keys


def _image_like(keys) -> list[str]:
    return sorted(k for k in keys if "image" in k or "cam" in k)


def robot_keys(spec, source_keys) -> dict:
    """The keys a prepared copy stores for ``spec``: cameras, numeric state + action keys, text keys
    (instruction, and the grounding text when the source records it)."""
    text = [spec.instruction_key] + ([spec.grounding_key] if spec.grounding_key in source_keys else [])
    return {
        "images": [k for k in spec.image_keys if k is not None],
        "numeric": list(dict.fromkeys(spec.state_keys + spec.action_keys)),
        "text": text,
    }


def covers(manifest: dict, spec) -> bool:
    """True if the prepared copy stores every key ``spec`` reads."""
    need = robot_keys(spec, manifest["source_keys"])
    return (set(need["images"]) <= set(manifest["images"]) and set(need["numeric"]) <= set(manifest["numeric"])
            and set(need["text"]) <= set(manifest["text"]))


def check_robot_layout(source_keys, dims: dict, stored: dict | None, spec, dataset: str,
                       max_action_dim: int | None = None, max_state_dim: int | None = None) -> None:
    """One line if a robot dataset does not match its spec.

    ``source_keys``: every step key of the source; ``dims``: {numeric key: dim} of (at least) the spec's
    keys present; ``stored``: the prepared copy's stored keys (:func:`robot_keys` format) or None while
    preparing.
    """
    hint = f"the prepared copy lacks it (spec '{spec.name}' changed since preparing); {PREPARE_HINT}"
    for slot, key in enumerate(spec.image_keys):
        if key is None:
            continue
        if key not in source_keys:
            raise DataError(
                f"dataset '{dataset}': image key '{key}' (camera slot {slot}, spec '{spec.name}') is missing "
                f"from the steps; image-like keys present: {_image_like(source_keys)}"
            )
        if stored is not None and key not in stored["images"]:
            raise DataError(f"dataset '{dataset}': image key '{key}': {hint}")
    for what, keys, dim, cap in (
        ("action", spec.action_keys, spec.action_dim, max_action_dim),
        ("state", spec.state_keys, spec.state_dim, max_state_dim),
    ):
        for key in keys:
            if key not in source_keys:
                raise DataError(f"dataset '{dataset}': {what} key '{key}' not found in the steps "
                                f"(available: {', '.join(source_keys)})")
            if stored is not None and key not in stored["numeric"]:
                raise DataError(f"dataset '{dataset}': {what} key '{key}': {hint}")
        total = sum(int(dims[k]) for k in keys)
        if total != dim:
            raise DataError(f"dataset '{dataset}': {what} keys {list(keys)} give {total}-D {what}s but spec "
                            f"'{spec.name}' expects {dim}-D")
        if cap is not None and dim > cap:
            raise DataError(f"dataset '{dataset}': {what} keys {list(keys)} are {dim}-D, more than "
                            f"config.model.max_{what}_dim={cap}")
    if spec.instruction_key not in source_keys:
        raise DataError(f"dataset '{dataset}': instruction key '{spec.instruction_key}' is missing from the steps")
    if stored is not None and spec.instruction_key not in stored["text"]:
        raise DataError(f"dataset '{dataset}': instruction key '{spec.instruction_key}': {hint}")
