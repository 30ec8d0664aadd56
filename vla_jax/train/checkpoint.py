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
short by a crash never looks like a checkpoint. :func:`is_complete` is the one test of a usable step,
shared by the trainer and the tools; :class:`Checkpointer` moves incomplete step directories, and
orbax temporary directories of saves cut short, aside to ``checkpoints_invalid`` before the manager
starts (synchronously: orbax's own background cleanup could still be running when a one-line error
ends the process).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
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


class CheckpointError(ValueError):
    """A checkpoint that is missing or cannot be used with the current config; the message is one line."""


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


# ----------------------------------------------------------------------------- complete steps
def is_complete(step_dir: str | os.PathLike) -> bool:
    """Whether a step directory is usable: orbax finalized it (step metadata written) and it holds parameters
    (a :data:`PARAMS_ITEMS` item), every such item with its ``_METADATA``. The one test of the trainer
    (resume, quarantine) and the tools (:func:`available_steps`)."""
    step_dir = epath.Path(step_dir)
    items = [step_dir / i for i in PARAMS_ITEMS if (step_dir / i).exists()]
    return (step_dir / STEP_METADATA).exists() and bool(items) and all((i / "_METADATA").exists() for i in items)


def complete_steps(root: str | os.PathLike) -> list[int]:
    """The complete steps (:func:`is_complete`) among the step directories in ``root``, oldest first."""
    root = epath.Path(root)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and is_complete(p))


# ----------------------------------------------------------------------------- manager (trainer)
class Checkpointer:
    """Saves every ``every`` steps (the loop decides), keeps the last ``keep_last`` and every
    ``keep_every``-th checkpoint (0 = none) forever."""

    def __init__(self, workdir: str, *, every: int, keep_last: int = 3, keep_every: int = 0,
                 async_save: bool = True):
        self.directory = epath.Path(os.path.abspath(workdir)) / "checkpoints"  # orbax needs absolute paths
        self.every = every
        self._quarantine_incomplete()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep_last or None,
            keep_period=(keep_every * every) if keep_every else None,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=False,  # _quarantine_incomplete moved them aside already
        )
        self.manager = ocp.CheckpointManager(self.directory, item_names=ITEMS, options=options)

    # -- discovery
    def _quarantine_incomplete(self) -> None:
        """Moves step directories that are not complete (:func:`is_complete`), and orbax temporary directories
        (``<step>.orbax-checkpoint-tmp-<n>``: no save is in flight yet), aside (process 0 only), so they
        are never restored nor block a later save of the same step."""
        bad = []
        if self.directory.exists():
            bad = [p for p in self.directory.iterdir() if p.is_dir() and (
                ".orbax-checkpoint-tmp" in p.name or (p.name.isdigit() and not is_complete(p)))]
        if bad and jax.process_index() == 0:
            aside = self.directory.parent / "checkpoints_invalid"
            aside.mkdir(parents=True, exist_ok=True)
            for p in bad:
                target = aside / f"{p.name}-{int(time.time())}"
                logging.warning("checkpoint %s is incomplete; moving it to %s", p, target)
                shutil.move(os.fspath(p), os.fspath(target))
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
        self.manager.check_for_errors()  # a failed earlier async save stops the run here, not silently
        self.manager.save(step, args=args, force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

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
        with .sharding). Returns ``(state, data_state or None, norm_stats)``.
        """
        step_dir = self.directory / str(step)
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
        except (ValueError, KeyError, TypeError) as e:
            hint = ""
            if config is not None:
                saved = self.read_json(step, "config")
                diffs = config_differences(saved, to_jsonable(config), "optimizer")
                hint = f" (differing fields: {'; '.join(diffs)})" if diffs else ""
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"checkpoint {step_dir} state does not match the "
                                  f"current train state{hint}: {first[:300]}") from None
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
    ``fallback`` file, else None."""
    for path in (os.path.join(step_dir, item, "metadata"), fallback):
        if path and os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
    return None


def _restore_params_tree(step_dir: str, key: str) -> dict:
    """Every parameter tree read from disk passes here: field ``key`` (:data:`PARAMS_KEYS`) of the step's first
    :data:`PARAMS_ITEMS` item, restored (from any sharding) as host numpy float32 model variables
    ``{"params": ...}``. CheckpointError (one line) when the item has no such field."""
    item_dir = next(epath.Path(step_dir) / i for i in PARAMS_ITEMS if (epath.Path(step_dir) / i / "_METADATA").exists())
    handler = ocp.PyTreeCheckpointHandler()  # item-level: no step metadata looked up inside the item directory
    try:
        tree = handler.metadata(item_dir).tree
        if not isinstance(tree, dict) or tree.get(key) is None:
            which = "EMA parameters (config.optimizer.ema_decay was off?)" if key == "ema_params" else "parameters"
            raise CheckpointError(f"checkpoint {step_dir} has no {which}; top-level keys: "
                                  f"{sorted(tree) if isinstance(tree, dict) else type(tree).__name__}")
        target = {key: jax.tree.map(lambda _: 0, tree[key])}
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        restored = handler.restore(item_dir, args=ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                                                          partial_restore=True))
    finally:
        handler.close()
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), restored[key])
    params = params["params"] if set(params) == {"params"} else params
    return {"params": legacy.upgrade_params(params)}  # checkpoints of the flat layout load through the rename table


def load_params(workdir: str, step: int | None = None, ema: bool = False) -> Checkpoint:
    """Reads the parameters (only: no optimizer state, no mesh) of a checkpoint onto host numpy.

    Works on checkpoints saved sharded over any number of devices: every array is restored as a full
    ``np.ndarray``. ``step=None`` takes the newest; ``ema=True`` the EMA parameters. CheckpointError
    (one line) for a missing run directory, checkpoint, step, EMA parameters or config.
    """
    if not os.path.isdir(workdir):
        raise CheckpointError(f"--workdir={workdir} does not exist")
    steps = available_steps(workdir)
    if not steps:
        raise CheckpointError(f"no checkpoint in {workdir} (expected {os.path.join(workdir, 'checkpoints', '<step>')} "
                              "written by python -m vla_jax.train)")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise CheckpointError(f"step {step} does not exist in {checkpoint_dir(workdir)}; available steps: "
                              f"{', '.join(map(str, steps))}")
    step_dir = os.path.abspath(os.path.join(checkpoint_dir(workdir), str(step)))  # orbax needs absolute paths
    params = _restore_params_tree(step_dir, "ema_params" if ema else "params")
    config = _read_json_item(step_dir, "config", os.path.join(workdir, "config.json"))
    if not config or "model" not in config:
        raise CheckpointError(f"checkpoint {step_dir} has no config (neither {step_dir}/config nor "
                              f"{workdir}/config.json); cannot rebuild the model")
    config = {**config, "model": legacy.upgrade_model_config(config["model"])}
    norm_stats = _read_json_item(step_dir, "norm_stats", os.path.join(workdir, "norm_stats.json"))
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
