"""Optional dependencies: which pip extra of vla_jax provides which package, and a one-line error when one is missing.

The base install (``pip install vla_jax``) trains, evaluates and inspects data on the built-in tabletop and
synthetic mixtures. Exporting, serving, Meta-World and LeRobot data import their packages lazily, where used;
command lines wrapped in :func:`needs_extras` turn a missing one into ``error: torch is not installed: pip
install 'vla_jax[export]'`` (exit status 2) instead of a traceback.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

# Top-level module -> the extra (pyproject.toml [project.optional-dependencies]) that installs it.
MODULE_EXTRAS: dict[str, str] = {
    "torch": "export",
    "onnx": "export",
    "onnxruntime": "export",
    "safetensors": "export",
    "onnxscript": "export",
    "mujoco": "sim",
    "metaworld": "sim",
    "gymnasium": "sim",
    "websockets": "serve",
    "msgpack": "serve",
    "tree": "serve",
    "av": "lerobot",
    "pyarrow": "lerobot",
    "wandb": "track",
}

# openpi-client declares numpy<2, so it is installed on its own, without its declared dependencies.
OPENPI_CLIENT_INSTALL = "pip install 'vla_jax[serve]' && pip install --no-deps openpi-client==0.1.2"

F = TypeVar("F", bound=Callable[..., object])


def missing_extra_message(error: ModuleNotFoundError) -> str | None:
    """The one-line fix for ``error`` if it is an optional package of vla_jax, else None."""
    top = (error.name or "").split(".")[0]
    if top == "openpi_client":
        return f"openpi-client is not installed: {OPENPI_CLIENT_INSTALL}"
    if top in MODULE_EXTRAS:
        return f"{top} is not installed: pip install 'vla_jax[{MODULE_EXTRAS[top]}]'"
    return None


def needs_extras(main: F) -> F:
    """Wraps a command line's ``main``: a missing optional package prints one line on stderr and returns 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except ModuleNotFoundError as e:
            message = missing_extra_message(e)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr, flush=True)
            return 2

    return wrapper  # type: ignore[return-value]
