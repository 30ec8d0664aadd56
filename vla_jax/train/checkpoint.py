"""Checkpoints: orbax ``CheckpointManager`` with async saves under ``<workdir>/checkpoints/<step>``.

Items of one checkpoint:

* ``state``       the TrainState (step, params, opt_state, ema_params, rng); restored onto any mesh
                  by passing target shardings (ShapeDtypeStructs with ``.sharding``).
* ``data``        the data iterator state, one JSON file per process (``process_<i>-of-<n>.json``).
* ``config``      the resolved config (JSON); compared with the current config before restoring.
* ``norm_stats``  normalization statistics the model was trained with (JSON).

Orbax writes each step into a temporary directory and renames it when complete, so a save cut
short by a crash never looks like a checkpoint. :meth:`Checkpointer.latest_step` also checks
every step directory for completeness and moves incomplete ones, and orbax temporary directories of
saves cut short, aside to ``checkpoints_invalid`` before the manager starts (synchronously: orbax's
own background cleanup could still be running when a one-line error ends the process).
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

ITEMS = ("state", "data", "config", "norm_stats")
REQUIRED = ("_CHECKPOINT_METADATA", "state/_METADATA", "config")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used with the current config; one line naming the field."""


# ----------------------------------------------------------------------------- data-iterator item
class IteratorStateHandler(ocp.CheckpointHandler):
    """Per-process JSON file with the iterator state (each process writes and reads its own)."""

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


def is_complete(step_dir: epath.Path) -> bool:
    return all((step_dir / r).exists() for r in REQUIRED)


# ----------------------------------------------------------------------------- manager
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
    def _step_dirs(self) -> dict[int, epath.Path]:
        if not self.directory.exists():
            return {}
        return {int(p.name): p for p in self.directory.iterdir() if p.is_dir() and p.name.isdigit()}

    def _quarantine_incomplete(self) -> None:
        """Moves step directories that miss required files, and orbax temporary directories
        (``<step>.orbax-checkpoint-tmp-<n>``: no save is in flight yet), aside (process 0 only), so they
        are never restored nor block a later save of the same step."""
        bad = [p for p in self._step_dirs().values() if not is_complete(p)]
        if self.directory.exists():
            bad += [p for p in self.directory.iterdir() if p.is_dir() and ".orbax-checkpoint-tmp" in p.name]
        if bad and jax.process_index() == 0:
            aside = self.directory.parent / "checkpoints_invalid"
            aside.mkdir(parents=True, exist_ok=True)
            for p in bad:
                target = aside / f"{p.name}-{int(time.time())}"
                logging.warning("checkpoint %s is incomplete; moving it to %s", p, target)
                shutil.move(os.fspath(p), os.fspath(target))
        if jax.process_count() > 1:  # every process, whatever it saw: process 0 may have moved them already
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("vla_jax_checkpoint_quarantine")

    def latest_step(self) -> int | None:
        """Newest complete checkpoint step (incomplete or temporary directories are skipped)."""
        good = [s for s, p in self._step_dirs().items() if is_complete(p)]
        return max(good) if good else None

    def all_steps(self) -> list[int]:
        return sorted(s for s, p in self._step_dirs().items() if is_complete(p))

    # -- save
    def save(self, step: int, state, *, data_state: Any, config: dict, norm_stats: dict | None) -> None:
        """Starts an async save (device->host copies finish before this returns, so the caller may
        donate ``state`` right after)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=IteratorSave(to_jsonable(data_state)),
            config=ocp.args.JsonSave(to_jsonable(config)),
            norm_stats=ocp.args.JsonSave(to_jsonable(norm_stats or {})),
        )
        self.manager.check_for_errors()  # a failed earlier async save stops the run here, not silently
        self.manager.save(step, args=args, force=True)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    # -- restore
    def read_json(self, step: int, item: str) -> Any:
        path = self.directory / str(step) / item / "metadata"
        if path.exists():
            return json.loads(path.read_text())
        return self.manager.restore(step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item]

    def check_config(self, step: int, config: dict) -> None:
        """Raises CheckpointError (one line) if the checkpoint's model differs from ``config.model``."""
        saved = self.read_json(step, "config")
        diffs = config_differences(saved, to_jsonable(config), "model")
        if diffs:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} does not match the config: {'; '.join(diffs)}. "
                "Use another --workdir (or init from it) to train a different model")

    def restore(self, step: int, target_state, config: dict | None = None) -> tuple[Any, Any, dict]:
        """Restores onto the shardings carried by ``target_state`` (ShapeDtypeStructs with .sharding).

        Returns ``(state, data_state or None, norm_stats)``.
        """
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
            raise CheckpointError(f"checkpoint {self.directory / str(step)} state does not match the "
                                  f"current train state{hint}: {first[:300]}") from None
        return out.state, out.data, out.norm_stats
