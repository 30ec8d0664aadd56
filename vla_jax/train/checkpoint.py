"""Checkpoint I/O: the trainer's orbax ``CheckpointManager`` (async saves, resume) and the readers and
writer the tools use (export, evaluation, ``config.init.from_checkpoint``, ``tools/import_torch.py``).

Steps live in ``<workdir>/checkpoints/<step>/``. Items of one step:

* ``params``      ``{"params": <model variables>, "ema_params": <model variables>}`` (``ema_params`` only
                  when EMA is on; model variables are ``{"params": ...}``): what inference-side tools restore.
* ``state``       the TrainState (step, params, opt_state, ema_params, rng) to resume from; restored onto
                  any mesh by passing target shardings (ShapeDtypeStructs with ``.sharding``).
* ``data``        the data iterator state, one JSON file per process (``process_<i>-of-<n>.json``).
* ``config``      the resolved config (JSON); compared with the current config before restoring.
* ``norm_stats``  normalization statistics the model was trained with (JSON).

The trainer writes all five at every save; :func:`write_checkpoint` writes ``params``, ``config`` and
``norm_stats`` only (a checkpoint a new run starts from with ``config.init.from_checkpoint``, not one
it resumes). :func:`load_params` reads the parameters from the ``params`` item, or from the ``state``
item (steps without a ``params`` item) or a ``default`` item (a plain ``CheckpointManager`` step
saved with ``StandardSave``; the config then comes from ``<workdir>/config.json``).

Orbax writes each step into a temporary directory and renames it when complete, so a save cut
short by a crash never looks like a checkpoint. Once orbax has finalized a step, :class:`Checkpointer`
writes ``<step>/checksums.json`` (:data:`MANIFEST`: size and sha256 of every file of the step, written
last, atomically). :func:`verify_step` is the one definition of a complete and intact step, shared by
the trainer (resume) and the tools (:func:`load_params`: export, evaluation, ``init.from_checkpoint``);
:func:`is_complete` is its cheap part (structure and file sizes, no hashing) that lists steps. Steps
written without a manifest are accepted when they restore. Restored parameters must be finite.

:class:`Checkpointer` moves incomplete or corrupt step directories, and orbax temporary directories of
saves cut short, aside to ``checkpoints_invalid`` (the newest :data:`QUARANTINE_KEEP` entries are kept)
before the manager starts (synchronously: orbax's own background cleanup could still be running when a
one-line error ends the process). A failed save raises :class:`CheckpointError` (one line) and removes
its partial directory; earlier steps stay as they are.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from vla_jax.models import legacy

ITEMS = ("params", "state", "data", "config", "norm_stats")
PARAMS_ITEMS = ("params", "state", "default")  # where parameters are read from, in this order
PARAMS_KEYS = ("params", "ema_params")  # the TrainState fields the ``params`` item holds
STEP_METADATA = "_CHECKPOINT_METADATA"  # written by orbax when a step is finalized
MANIFEST = "checksums.json"  # {"algorithm": "sha256", "files": {relative path: [size, hex digest]}}
QUARANTINE = "checkpoints_invalid"  # beside ``checkpoints``: step directories that are not usable
QUARANTINE_KEEP = 3  # entries of QUARANTINE kept (newest first); older ones are deleted


class CheckpointError(ValueError):
    """A checkpoint that is missing or cannot be used with the current config; the message is one line."""


class CorruptCheckpointError(CheckpointError):
    """A step directory that is incomplete, differs from its manifest, cannot be read or holds non-finite
    parameters; the message (one line) names the step and the file."""


# ----------------------------------------------------------------------------- data-iterator item
class IteratorStateHandler(ocp.CheckpointHandler):
    """Per-process JSON file with the iterator state (each process writes and reads its own).

    grain's ``grain.checkpoint.CheckpointHandler`` writes the same ``process_<i>-of-<n>.json`` files but
    saves and restores a grain iterator object (``get_state``/``set_state`` and ``start_prefetch``) and
    raises on a missing file, while the trainer's mixture iterator is not a grain iterator and a missing
    file means "restart the data stream" (``None``), so this handler stores the plain JSON state itself.
    """

    def save(self, directory: epath.Path, args: "IteratorSave"):
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        (directory / name).write_text(json.dumps(args.state))

    def restore(self, directory: epath.Path, args: "IteratorRestore | None" = None):
        path = directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def metadata(self, directory):
        return None

    def structure(self, directory):
        return None

    def finalize(self, directory):
        pass

    def close(self):
        pass


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorSave(ocp.args.CheckpointArgs):
    state: Any


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorRestore(ocp.args.CheckpointArgs):
    pass


# ----------------------------------------------------------------------------- helpers
def to_jsonable(x):
    """Nested dicts/lists of numpy arrays and scalars -> plain JSON values."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    if hasattr(x, "to_dict"):
        return to_jsonable(x.to_dict())
    return x


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = tuple(v) if isinstance(v, list) else v
    return out


def config_differences(saved: dict, current: dict, section: str) -> list[str]:
    """``["config.model.max_action_dim=14 (checkpoint) vs 7 (now)", ...]`` for one config section."""
    a = flatten(saved.get(section) or {}, f"config.{section}.")
    b = flatten(to_jsonable(current.get(section) or {}), f"config.{section}.")
    b = {k: tuple(v) if isinstance(v, list) else v for k, v in b.items()}
    diffs = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            diffs.append(f"{key}={a.get(key, '<missing>')!r} (checkpoint) vs {b.get(key, '<missing>')!r} (now)")
    return diffs


def params_item(state) -> dict:
    """The ``params`` item of a train state (a TrainState or a dict): its :data:`PARAMS_KEYS` fields that are set."""
    fields = state if isinstance(state, dict) else {k: getattr(state, k, None) for k in PARAMS_KEYS}
    return {k: fields[k] for k in PARAMS_KEYS if fields.get(k) is not None}


# ----------------------------------------------------------------------------- complete and intact steps
def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:300] if text else type(e).__name__)


def _step_label(step_dir: epath.Path) -> str:
    return f"checkpoint step {step_dir.name} ({step_dir})"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)  # releases the GIL: files hash in parallel threads
    return h.hexdigest()


def _hash_files(root: str, names: list[str]) -> dict[str, str]:
    """sha256 of ``root/name`` for every name, several files at a time."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return dict(zip(names, pool.map(lambda n: _sha256(os.path.join(root, n)), names)))


def write_manifest(step_dir: str | os.PathLike) -> None:
    """Writes :data:`MANIFEST` for a finalized step: size and sha256 of every other file below ``step_dir``.
    Written to a temporary file, flushed to disk and renamed, so a step has either the whole manifest or none."""
    root = os.fspath(step_dir)
    names = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files
                   if not (d == root and f.startswith(MANIFEST)))
    digests = _hash_files(root, names)
    rows = [f"  {json.dumps(n)}: [{os.path.getsize(os.path.join(root, n))}, \"{digests[n]}\"]" for n in names]
    tmp = os.path.join(root, MANIFEST + ".tmp")
    with open(tmp, "w") as f:  # one file a line
        f.write('{"algorithm": "sha256", "files": {\n' + ",\n".join(rows) + "\n}}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(root, MANIFEST))
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify_step(step_dir: str | os.PathLike, *, hashes: bool = True) -> None:
    """Raises :class:`CorruptCheckpointError` (one line naming the step and the file) unless ``step_dir`` is a
    complete and intact step: orbax finalized it (:data:`STEP_METADATA`), it holds parameters (a
    :data:`PARAMS_ITEMS` item, every such item with its ``_METADATA``) and every file of its :data:`MANIFEST`
    exists with the recorded size and (``hashes=True``) sha256. Steps without a manifest pass on structure.
    The one test of the trainer (resume, quarantine) and the tools (:func:`load_params`)."""
    step_dir = epath.Path(step_dir)
    label = _step_label(step_dir)
    if not (step_dir / STEP_METADATA).exists():
        raise CorruptCheckpointError(f"{label} is incomplete: {STEP_METADATA} is missing")
    items = [i for i in PARAMS_ITEMS if (step_dir / i).exists()]
    if not items:
        raise CorruptCheckpointError(f"{label} is incomplete: no parameters ({' / '.join(PARAMS_ITEMS)} item)")
    for item in items:
        if not (step_dir / item / "_METADATA").exists():
            raise CorruptCheckpointError(f"{label} is incomplete: {item}/_METADATA is missing")
    manifest_path = step_dir / MANIFEST
    if not manifest_path.exists():
        return
    try:
        files = json.loads(manifest_path.read_text())["files"]
        expected = {str(name): (int(size), str(digest)) for name, (size, digest) in files.items()}
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptCheckpointError(f"{label} is corrupt: {MANIFEST} is unreadable ({_first_line(e)})") from None
    root = os.fspath(step_dir)
    for name, (size, _) in sorted(expected.items()):
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            raise CorruptCheckpointError(f"{label} is corrupt: {name} is missing")
        if os.path.getsize(path) != size:
            raise CorruptCheckpointError(f"{label} is corrupt: {name} has {os.path.getsize(path)} bytes, "
                                         f"{size} when saved")
    if hashes:
        names = sorted(expected)
        for name, digest in _hash_files(root, names).items():
            if digest != expected[name][1]:
                raise CorruptCheckpointError(f"{label} is corrupt: {name} fails its checksum (sha256 {digest[:12]}…, "
                                             f"{expected[name][1][:12]}… when saved)")


def is_complete(step_dir: str | os.PathLike) -> bool:
    """Whether a step directory passes :func:`verify_step` without hashing (structure and file sizes): the
    cheap test that lists steps (:func:`complete_steps`, :func:`available_steps`)."""
    try:
        verify_step(step_dir, hashes=False)
    except CorruptCheckpointError:
        return False
    return True


def step_dirs(root: str | os.PathLike) -> list[int]:
    """The steps of all step directories (named by a number) in ``root``, complete or not, oldest first."""
    root = epath.Path(root)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir())


def complete_steps(root: str | os.PathLike) -> list[int]:
    """The complete steps (:func:`is_complete`) among the step directories in ``root``, oldest first."""
    return [s for s in step_dirs(root) if is_complete(epath.Path(root) / str(s))]


def intact_steps(root: str | os.PathLike) -> list[int]:
    """The steps in ``root`` that pass :func:`verify_step` with hashes, oldest first (reads every file)."""
    out = []
    for s in complete_steps(root):
        try:
            verify_step(epath.Path(root) / str(s))
            out.append(s)
        except CorruptCheckpointError:
            pass
    return out


def first_non_finite(tree: Any) -> str | None:
    """The path of the first floating-point leaf of ``tree`` (numpy or jax arrays, any sharding) holding a NaN
    or an infinity, else None."""
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not np.issubdtype(np.dtype(x.dtype), np.inexact):
            continue
        finite = np.isfinite(x).all() if isinstance(x, np.ndarray) else jax.numpy.isfinite(x).all()
        if not bool(finite):
            return jax.tree_util.keystr(path)
    return None


def quarantine(path: str | os.PathLike, reason: str) -> str:
    """Moves ``path`` (a step or orbax temporary directory) to ``<workdir>/checkpoints_invalid/<name>-<n>``,
    saying so in one line with ``reason``, and deletes all but the newest :data:`QUARANTINE_KEEP` entries
    there. Returns the new location."""
    path = epath.Path(path)
    aside = path.parent.parent / QUARANTINE
    aside.mkdir(parents=True, exist_ok=True)
    n = 0
    while (aside / f"{path.name}-{n}").exists():
        n += 1
    target = aside / f"{path.name}-{n}"
    shutil.move(os.fspath(path), os.fspath(target))
    logging.warning("%s; moved it to %s (%s keeps its newest %d entries)", reason, target, QUARANTINE,
                    QUARANTINE_KEEP)
    entries = sorted(aside.iterdir(), key=lambda p: os.stat(p).st_ctime_ns)  # a move sets ctime
    for old in entries[:-QUARANTINE_KEEP]:
        if old.is_dir():
            shutil.rmtree(os.fspath(old), ignore_errors=True)
        else:
            old.unlink()
    return os.fspath(target)


class _OrbaxErrorFilter(logging.Filter):
    """Drops orbax's own error records (tracebacks from its save threads and asyncio tasks) unless INFO logging
    is on: a failed save reaches the caller as one :class:`CheckpointError` line."""

    def filter(self, record: logging.LogRecord) -> bool:
        orbax = f"{os.sep}orbax{os.sep}"
        return (record.levelno < logging.ERROR or logging.getLogger("absl").isEnabledFor(logging.INFO)
                or (orbax not in record.pathname and orbax not in record.getMessage()))


def _is_late_write(e: BaseException | None) -> bool:
    """Whether ``e`` is a write of a failed save completing after orbax closed its event loop (tensorstore
    reports these from its own threads through ``sys.excepthook`` or ``sys.unraisablehook``)."""
    return isinstance(e, RuntimeError) and str(e) == "Event loop is closed"


def _quiet_failed_saves() -> None:
    """Installs (once per process) the filters that keep a failed save to the one line of its error: orbax's
    error records (:class:`_OrbaxErrorFilter`) and the failed save's late writes (:func:`_is_late_write`)."""
    if any(isinstance(f, _OrbaxErrorFilter) for f in logging.getLogger("absl").filters):
        return
    for name in ("absl", "asyncio"):
        logging.getLogger(name).addFilter(_OrbaxErrorFilter())
    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook
    sys.excepthook = lambda t, e, tb: None if _is_late_write(e) else excepthook(t, e, tb)
    sys.unraisablehook = lambda u: None if _is_late_write(u.exc_value) else unraisablehook(u)


# ----------------------------------------------------------------------------- manager (trainer)
class Checkpointer:
    """Saves every ``every`` steps (the loop decides), keeps the last ``keep_last`` and every
    ``keep_every``-th checkpoint (0 = none) forever. Writes each step's :data:`MANIFEST` once orbax has
    finalized it; a failed save raises :class:`CheckpointError` (one line) from the next :meth:`poll`,
    :meth:`save`, :meth:`wait` or :meth:`close`."""

    def __init__(self, workdir: str, *, every: int, keep_last: int = 3, keep_every: int = 0,
                 async_save: bool = True):
        self.directory = epath.Path(os.path.abspath(workdir)) / "checkpoints"  # orbax needs absolute paths
        self.every = every
        self._pending: int | None = None  # the step of the save in flight (manifest not written yet)
        self._failed = False
        _quiet_failed_saves()
        self._quarantine_unusable()
        self._intact = self.latest_step()  # verified with hashes by process 0
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep_last or None,
            keep_period=(keep_every * every) if keep_every else None,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=False,  # _quarantine_unusable moved them aside already
        )
        self.manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)

    # -- discovery
    def _quarantine_unusable(self) -> None:
        """Moves aside (process 0 only; :func:`quarantine`) orbax temporary directories
        (``<step>.orbax-checkpoint-tmp-<n>``: no save is in flight yet), step directories that are not complete
        (:func:`is_complete`) and, newest first, complete steps that fail :func:`verify_step` until one passes:
        so corrupt or partial steps are never restored nor block a later save of the same step."""
        if jax.process_index() == 0 and self.directory.exists():
            for p in sorted(self.directory.iterdir()):
                if p.is_dir() and ".orbax-checkpoint-tmp" in p.name:
                    quarantine(p, f"checkpoint {p} is an unfinished save")
            moved = False
            for step in reversed(step_dirs(self.directory)):
                try:
                    verify_step(self.directory / str(step), hashes=True)
                except CorruptCheckpointError as e:
                    quarantine(self.directory / str(step), str(e))
                    moved = True
                    continue
                if moved:
                    logging.warning("falling back to checkpoint step %d, the newest intact one", step)
                break
            for step in step_dirs(self.directory):  # older ones: those not even complete (structure, sizes)
                try:
                    verify_step(self.directory / str(step), hashes=False)
                except CorruptCheckpointError as e:
                    quarantine(self.directory / str(step), str(e))
        if jax.process_count() > 1:  # every process, whatever it saw: process 0 may have moved them already
            multihost_utils.sync_global_devices("vla_jax_checkpoint_quarantine")

    def latest_step(self) -> int | None:
        """Newest complete checkpoint step (incomplete or temporary directories are skipped)."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def all_steps(self) -> list[int]:
        return complete_steps(self.directory)

    # -- save
    def save(self, step: int, state, *, data_state: Any, config: dict, norm_stats: dict | None) -> None:
        """Starts an async save of the full train state, its ``params`` item and the data iterator state
        (device->host copies finish before this returns, so the caller may donate ``state`` right after)."""
        items = {"state": ocp.args.StandardSave(state), "data": IteratorSave(to_jsonable(data_state))}
        params = params_item(state)
        if params:
            items["params"] = ocp.args.StandardSave(params)
        self._save(step, items, config, norm_stats)

    def save_params(self, step: int, params: dict, *, config: dict, norm_stats: dict | None) -> None:
        """Saves a params-only step: ``params`` (a :func:`params_item`-shaped dict), ``config`` and ``norm_stats``."""
        self._save(step, {"params": ocp.args.StandardSave(params)}, config, norm_stats)

    def _save(self, step: int, items: dict, config: dict, norm_stats: dict | None) -> None:
        args = ocp.args.Composite(**items, config=ocp.args.JsonSave(to_jsonable(config)),
                                  norm_stats=ocp.args.JsonSave(to_jsonable(norm_stats or {})))
        self._finish()  # the previous save: its error (one line) stops the run here, else its manifest
        self._pending = step
        try:
            self.manager.save(step, args=args, force=True)
        except Exception as e:  # noqa: BLE001 - any failure of the write becomes one line
            self._fail(step, e)
        if not self.manager.is_saving_in_progress():  # synchronous save (or an async one already done)
            self._finish()

    def poll(self) -> None:
        """Without blocking: when the save in flight has ended, raises its error (one line) or writes its
        manifest. Called every step, so a failed save stops the run at once."""
        if self._pending is not None and not self.manager.is_saving_in_progress():
            self._finish()

    def _finish(self) -> None:
        """Waits for the save in flight; raises its error (one line) or writes its :data:`MANIFEST`."""
        if self._pending is None:
            return
        step = self._pending
        try:
            self.manager.wait_until_finished()
            if jax.process_index() == 0:
                write_manifest(self.directory / str(step))
        except Exception as e:  # noqa: BLE001 - orbax raises ValueError, OSError, RuntimeError, ...
            self._fail(step, e)
        self._pending = None

    def _fail(self, step: int, error: Exception) -> None:
        """Raises the one-line error of a failed save of ``step`` after removing its partial directory."""
        self._failed = True
        self._pending = None
        if jax.process_index() == 0:
            for p in self.directory.iterdir():
                if p.name.startswith(f"{step}.orbax-checkpoint-tmp"):
                    shutil.rmtree(os.fspath(p), ignore_errors=True)
        previous = [s for s in self.all_steps() if s != step]
        kept = f"step {previous[-1]} is the newest checkpoint" if previous else "no earlier checkpoint"
        raise CheckpointError(f"saving checkpoint step {step} to {self.directory} failed: {_first_line(error)} "
                              f"({kept}); stopping") from None

    def wait(self) -> None:
        self._finish()

    def close(self) -> None:
        """Waits for the save in flight (its error raises, one line) and closes the manager. After a failed
        save it only closes (the error was raised already)."""
        if not self._failed:
            self._finish()
        try:
            self.manager.close()
        except Exception:  # noqa: BLE001 - the manager re-raises the failed save's error, reported already
            if not self._failed:
                raise

    # -- restore
    def read_json(self, step: int, item: str) -> Any:
        """A JSON item (``config``, ``norm_stats``) of a step; CheckpointError (one line) when the step has none."""
        value = _read_json_item(os.fspath(self.directory / str(step)), item, None)
        if value is None:
            raise CheckpointError(f"checkpoint {self.directory / str(step)} has no {item} item")
        return value

    def check_config(self, step: int, config: dict) -> None:
        """Raises CheckpointError (one line) if the checkpoint's model differs from ``config.model``."""
        saved = self.read_json(step, "config")
        diffs = config_differences(saved, to_jsonable(config), "model")
        if diffs:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} does not match the config: {'; '.join(diffs)}. "
                "Use another --workdir (or init from it) to train a different model")

    def restore(self, step: int, target_state, config: dict | None = None) -> tuple[Any, Any, dict]:
        """Restores the full train state onto the shardings carried by ``target_state`` (ShapeDtypeStructs
        with .sharding). Returns ``(state, data_state or None, norm_stats)``. The step must pass
        :func:`verify_step` and its parameters must be finite; one that holds NaN or infinity is moved aside
        (:func:`quarantine`) before the one-line error, so the next run resumes from the step before it.
        """
        step_dir = self.directory / str(step)
        if step != self._intact:  # the newest step was verified when the Checkpointer started
            verify_step(step_dir)
        if not (step_dir / "state").exists():
            raise CheckpointError(f"checkpoint {step_dir} holds parameters only (no train state to resume); "
                                  f"start a new run from it with config.init.from_checkpoint={self.directory.parent}")
        if config is not None:
            self.check_config(step, config)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(target_state),
                data=IteratorRestore(),
                norm_stats=ocp.args.JsonRestore(),
            ))
        except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many types; one line each
            hint = ""
            if config is not None:
                saved = self.read_json(step, "config")
                diffs = config_differences(saved, to_jsonable(config), "optimizer")
                hint = f" (differing fields: {'; '.join(diffs)})" if diffs else ""
            raise CheckpointError(f"checkpoint {step_dir} state does not match the "
                                  f"current train state{hint}: {_first_line(e)}") from None
        bad = first_non_finite(params_item(out.state))
        if bad is not None:
            reason = f"{_step_label(step_dir)} holds non-finite parameters ({bad})"
            if jax.process_index() == 0:
                quarantine(step_dir, reason)
            earlier = [s for s in self.all_steps() if s < step]
            raise CorruptCheckpointError(f"{reason}; moved it to {self.directory.parent / QUARANTINE}; run again "
                                         f"to resume from {f'step {earlier[-1]}' if earlier else 'scratch'}")
        return out.state, out.data, out.norm_stats


# ----------------------------------------------------------------------------- reading (tools)
@dataclasses.dataclass
class Checkpoint:
    """The parameters of one step on host numpy, with the config and statistics saved beside them."""

    params: dict            # {"params": nested numpy float32}
    step: int
    config: dict            # the training config as saved (JSON)
    norm_stats: dict | None
    path: str               # the step directory
    ema: bool


def checkpoint_dir(workdir: str) -> str:
    """The directory holding the step directories: ``<workdir>/checkpoints``, or ``workdir`` without one."""
    sub = os.path.join(workdir, "checkpoints")
    return sub if os.path.isdir(sub) else workdir


def available_steps(workdir: str) -> list[int]:
    """The complete steps (:func:`is_complete`) of a run directory, oldest first."""
    return complete_steps(checkpoint_dir(workdir))


def _read_json_item(step_dir: str, item: str, fallback: str | None) -> Any:
    """A JSON item of a step (``<step_dir>/<item>/metadata``, the file orbax's ``JsonSave`` writes), else the
    ``fallback`` file, else None. CorruptCheckpointError (one line) when the file is not JSON."""
    for path in (os.path.join(step_dir, item, "metadata"), fallback):
        if path and os.path.isfile(path):
            try:
                with open(path) as f:
                    return json.load(f)
            except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
                raise CorruptCheckpointError(f"{path} is not valid JSON ({_first_line(e)})") from None
    return None


def _restore_params_tree(step_dir: str, key: str) -> dict:
    """Every parameter tree read from disk passes here: field ``key`` (:data:`PARAMS_KEYS`) of the step's first
    :data:`PARAMS_ITEMS` item, restored (from any sharding) as host numpy float32 model variables
    ``{"params": ...}``. CheckpointError (one line) when the item has no such field; CorruptCheckpointError
    when it cannot be read or holds a NaN or an infinity."""
    item_dir = next(epath.Path(step_dir) / i for i in PARAMS_ITEMS if (epath.Path(step_dir) / i / "_METADATA").exists())
    label = _step_label(epath.Path(step_dir))
    handler = ocp.PyTreeCheckpointHandler()  # item-level: no step metadata looked up inside the item directory
    try:
        tree = handler.metadata(item_dir).tree
        if not isinstance(tree, dict):
            raise CorruptCheckpointError(f"{label} cannot be read: {item_dir.name}/_METADATA describes no tree")
        if tree.get(key) is None:
            which = "EMA parameters (config.optimizer.ema_decay was off?)" if key == "ema_params" else "parameters"
            raise CheckpointError(f"checkpoint {step_dir} has no {which}; top-level keys: {sorted(tree)}")
        target = {key: jax.tree.map(lambda _: 0, tree[key])}
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        restored = handler.restore(item_dir, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                                          partial_restore=True))
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many types; one line each
        raise CorruptCheckpointError(f"{label} cannot be read: {item_dir.name}: {_first_line(e)}") from None
    finally:
        handler.close()
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), restored[key])
    bad = first_non_finite(params)
    if bad is not None:
        raise CorruptCheckpointError(f"{label} holds non-finite parameters ({item_dir.name}: {key}{bad})")
    params = params["params"] if set(params) == {"params"} else params
    return {"params": legacy.upgrade_params(params)}  # checkpoints of the flat layout load through the rename table


def load_params(workdir: str, step: int | None = None, ema: bool = False) -> Checkpoint:
    """Reads the parameters (only: no optimizer state, no mesh) of a checkpoint onto host numpy.

    Works on checkpoints saved sharded over any number of devices: every array is restored as a full
    ``np.ndarray``. ``step=None`` takes the newest step directory; ``ema=True`` the EMA parameters. The step
    must pass :func:`verify_step` and hold finite parameters; otherwise CorruptCheckpointError (one line)
    lists the intact steps to pass instead. CheckpointError (one line) for a missing run directory,
    checkpoint, step, EMA parameters or config.
    """
    if not os.path.isdir(workdir):
        raise CheckpointError(f"--workdir={workdir} does not exist")
    root = checkpoint_dir(workdir)
    steps = step_dirs(root)
    if not steps:
        raise CheckpointError(f"no checkpoint in {workdir} (expected {os.path.join(workdir, 'checkpoints', '<step>')} "
                              "written by python -m vla_jax.train)")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise CheckpointError(f"step {step} does not exist in {root}; available steps: "
                              f"{', '.join(map(str, complete_steps(root))) or 'none'}")
    step_dir = os.path.abspath(os.path.join(root, str(step)))  # orbax needs absolute paths
    try:
        verify_step(step_dir)
        params = _restore_params_tree(step_dir, "ema_params" if ema else "params")
        config = _read_json_item(step_dir, "config", os.path.join(workdir, "config.json"))
        norm_stats = _read_json_item(step_dir, "norm_stats", os.path.join(workdir, "norm_stats.json"))
    except CorruptCheckpointError as e:
        others = [s for s in intact_steps(root) if s != step]
        raise CorruptCheckpointError(f"{e}; pass another step (--step; intact steps: "
                                     f"{', '.join(map(str, others)) or 'none'})") from None
    if not config or "model" not in config:
        raise CheckpointError(f"checkpoint {step_dir} has no config (neither {step_dir}/config nor "
                              f"{workdir}/config.json); cannot rebuild the model")
    config = {**config, "model": legacy.upgrade_model_config(config["model"])}
    return Checkpoint(params=params, step=int(step), config=config, norm_stats=norm_stats or None, path=step_dir,
                      ema=ema)


# ----------------------------------------------------------------------------- writing (tools)
def write_checkpoint(workdir: str, params: dict, config, norm_stats: dict | None, step: int = 0) -> str:
    """Writes model variables ``params`` (``{"params": ...}``) as a params-only step of ``workdir`` (no optimizer
    state; ``ema_params`` = ``params`` when ``config.optimizer.ema_decay`` is set) and ``<workdir>/config.json``.
    A new run starts from it with ``config.init.from_checkpoint=WORKDIR``; :func:`load_params` reads it.
    Returns the step directory."""
    item = {"params": params}
    if config.optimizer.get("ema_decay"):
        item["ema_params"] = params
    checkpointer = Checkpointer(workdir, every=1, async_save=False)
    checkpointer.save_params(step, item, config=config.to_dict(), norm_stats=norm_stats)
    checkpointer.close()
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    return os.path.join(workdir, "checkpoints", str(step))
