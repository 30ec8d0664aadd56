"""Optional Weights & Biases logging beside metrics.jsonl and TensorBoard (``config.metrics.wandb``).

Off unless ``config.metrics.wandb.project`` is set. The run id is kept in ``<workdir>/wandb_run_id`` so a
resumed run (same workdir) continues the same W&B run; ``mode="offline"`` writes under ``<workdir>/wandb``
for a later ``wandb sync``. Only process 0 logs."""

from __future__ import annotations

import os
import secrets
import sys

import ml_collections

from vla_jax.extras import missing_extra_message

RUN_ID_FILE = "wandb_run_id"
MODES = ("online", "offline", "disabled")


class WandbError(ValueError):
    """A W&B setting that cannot work (package missing, unknown mode); one line naming the fix."""


def settings_error(settings: ml_collections.ConfigDict) -> str | None:
    """The one-line problem with ``config.metrics.wandb`` when it is switched on, else None."""
    if not settings.project:
        return None
    if settings.mode not in MODES:
        return f"config.metrics.wandb.mode={settings.mode!r} is not one of {', '.join(MODES)}"
    try:
        import wandb  # noqa: F401
    except ModuleNotFoundError as e:
        return (f"config.metrics.wandb.project is set but {missing_extra_message(e)}, "
                "or leave config.metrics.wandb.project empty")
    return None


class WandbWriter:
    """``write(step, scalars)`` -> ``wandb.log``; ``close()`` finishes the run (never raises)."""

    def __init__(self, workdir: str, settings: ml_collections.ConfigDict, config: dict):
        error = settings_error(settings)
        if error:
            raise WandbError(error)
        import wandb

        id_file = os.path.join(workdir, RUN_ID_FILE)
        if os.path.exists(id_file):
            with open(id_file) as f:
                run_id = f.read().strip()
        else:
            run_id = secrets.token_hex(4)  # W&B run ids: lowercase alphanumerics
            with open(id_file, "w") as f:
                f.write(run_id + "\n")
        self.run = wandb.init(project=settings.project, entity=settings.entity or None,
                              name=settings.name or os.path.basename(os.path.abspath(workdir)),
                              mode=settings.mode, dir=os.path.abspath(workdir), id=run_id, resume="allow",
                              config=config)  # absolute: an inherited W&B service resolves paths from its own cwd

    def write(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log({k: float(v) for k, v in scalars.items()}, step=int(step))

    def close(self) -> None:
        try:
            self.run.finish()
        except Exception as e:  # noqa: BLE001 - closing runs while the run stops; report, do not mask
            print(f"warning: could not finish the W&B run: {e}", file=sys.stderr)
