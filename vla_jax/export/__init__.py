"""Checkpoint export for deployment: a PyTorch module, an ONNX graph and a parity check against JAX.

* ``torch_port``   — the policy in plain PyTorch, core + add-ons (imports only torch, numpy, safetensors; no JAX).
* ``to_torch``     — JAX params <-> ``model.safetensors`` (PyTorch names) + ``config.json``, exact both ways.
* ``to_onnx``      — ``policy.onnx`` (whole sampling path, dynamic batch) and the opset checks.
* ``parity``       — the same inputs through JAX, PyTorch and onnxruntime; max abs action difference.
* ``package``      — :func:`export` (checkpoint -> folder + model card), :func:`import_torch` (folder -> a
                     params-only checkpoint a new run starts from). Checkpoints are read and written by
                     ``vla_jax.train.checkpoint`` (``load_params``, ``write_checkpoint``).

Command lines: ``tools/export.py`` and ``tools/import_torch.py``; usage in ``docs/export.md``.
Nothing here is imported eagerly, so ``import vla_jax.export.torch_port`` works without JAX installed.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "VLAPolicy": ("torch_port", "VLAPolicy"),
    "ExportError": ("package", "ExportError"),
    "export": ("package", "export"),
    "import_torch": ("package", "import_torch"),
}


def __getattr__(name: str):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
