"""The prepared layout: what the trainer reads (vla_jax/data/prepare.py writes it).

One directory per dataset, ``<config.data.prepared_dir>/<dataset>/``::

    manifest.json                          kind, source (dir, versioned path, digest), the spec layout it was
                                           prepared for, the source's step keys, dims, splits
    <split>/frames-XXXXX.array_record      robot: one record per step (transition), in episode order:
                                           that step's camera bytes + its episode and step index
    <split>/episode_lengths.npy            robot: [E] int64
    <split>/state.npy, action.npy          robot: [N, S], [N, A] float32, the spec's column expressions
                                           evaluated over whole episodes (vla_jax/data/columns.py)
    <split>/<role>.ids.npy, .values.json   robot: [N] int32 index into the distinct strings of the
                                           instruction (and the grounding text, when the source has it)
    <split>/examples-XXXXX.array_record    web: the source's example records, unchanged

Transition ``g`` of a split (``g = offset of its episode + step``) is frame record ``g`` and row ``g``
of every column, so a sample reads one frame record and a few rows whatever its episode's length.
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


def text_files(role: str) -> tuple[str, str]:
    return role + ".ids.npy", role + ".values.json"


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
    """The manifest of the prepared copy at ``path`` after checking it against its source: a copy of ``kind``
    made from ``source_dir`` and, for a local source, from its current content (digest). Every failure is
    one line naming the command to run; a remote (``gs://``) source is not read."""
    manifest = read_manifest(path, dataset)
    if manifest["kind"] != kind:
        raise DataError(f"dataset '{dataset}': {path} holds a prepared {manifest['kind']} dataset, not {kind}; "
                        f"{PREPARE_HINT}")
    if manifest["source"]["dir"] != str(source_dir):
        raise DataError(f"dataset '{dataset}': {path} was prepared from {manifest['source']['dir']}, not "
                        f"{source_dir}; {PREPARE_HINT}")
    if not release.is_remote(source_dir) and source_entry(source_dir, dataset) != manifest["source"]:
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
    """One prepared robot split: per-episode lengths, frame records, state / action rows and texts, all
    indexed by the transition index ``g`` of the split (episodes in record order, steps in order)."""

    def __init__(self, path: str, manifest: dict, split: str, dataset: str):
        info = split_info(manifest, split, dataset, path)
        self.dir = os.path.join(path, split)
        self.dataset = dataset
        self.images = tuple(manifest["layout"]["image_keys"])
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

    def column(self, what: str) -> np.ndarray:
        """[N, D] float32 (memory-mapped): ``what`` = "state" | "action"."""
        if what not in self._columns:
            self._columns[what] = np.load(os.path.join(self.dir, what + ".npy"), mmap_mode="r")
        return self._columns[what]

    @property
    def state(self) -> np.ndarray:
        return self.column("state")

    @property
    def action(self) -> np.ndarray:
        return self.column("action")

    def rows(self, what: str, start: int, stop: int) -> np.ndarray:
        """[stop - start, D] float32 copy of rows [start, stop) of ``what``."""
        return np.array(self.column(what)[start:stop], np.float32)

    def text(self, role: str, g: int) -> str:
        """The ``role`` ("instruction" | "grounding") string of transition ``g``."""
        if role not in self._texts:
            ids_file, values_file = text_files(role)
            with open(os.path.join(self.dir, values_file)) as f:
                values = json.load(f)
            self._texts[role] = (np.load(os.path.join(self.dir, ids_file), mmap_mode="r"), values)
        ids, values = self._texts[role]
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


# ----------------------------------------------------------------------------- robot layout


def _image_like(keys) -> list[str]:
    return sorted(k for k in keys if "image" in k or "cam" in k)


def robot_layout(spec, source_keys) -> dict:
    """What a prepared copy made for ``spec`` holds: its cameras and the column expressions of its state,
    action and instruction, and its grounding text key when the source records it (else None)."""
    return {
        "image_keys": [k for k in spec.image_keys if k is not None],
        "state_keys": list(spec.state_keys),
        "action_keys": list(spec.action_keys),
        "instruction_key": spec.instruction_key,
        "grounding_key": spec.grounding_key if spec.grounding_key in source_keys else None,
    }


def check_robot_layout(manifest: dict, spec, dataset: str, max_action_dim: int | None = None,
                       max_state_dim: int | None = None) -> None:
    """One line if the prepared copy does not match ``spec``: a key the spec reads missing from the source,
    a copy made for other expressions (prepare again), other dims or dims above the model's."""
    source_keys = manifest["source_keys"]
    for slot, key in enumerate(spec.image_keys):
        if key is not None and key not in source_keys:
            raise DataError(
                f"dataset '{dataset}': image key '{key}' (camera slot {slot}, spec '{spec.name}') is missing "
                f"from the steps; image-like keys present: {_image_like(source_keys)}"
            )
    for key in spec.step_keys():
        if key not in source_keys:
            raise DataError(f"dataset '{dataset}': key '{key}' not found in the steps (available: "
                            f"{', '.join(source_keys)})")
    if robot_layout(spec, source_keys) != manifest["layout"]:
        raise DataError(f"dataset '{dataset}': its prepared copy was made for other keys or column expressions "
                        f"than spec '{spec.name}' has now; {PREPARE_HINT}")
    for what, keys, dim, cap in (
        ("action", spec.action_keys, spec.action_dim, max_action_dim),
        ("state", spec.state_keys, spec.state_dim, max_state_dim),
    ):
        stored = int(manifest["dims"][what])
        if stored != dim:
            raise DataError(f"dataset '{dataset}': {what} keys {list(keys)} give {stored}-D {what}s but spec "
                            f"'{spec.name}' expects {dim}-D")
        if cap is not None and dim > cap:
            raise DataError(f"dataset '{dataset}': {what} keys {list(keys)} are {dim}-D, more than "
                            f"config.model.max_{what}_dim={cap}")
