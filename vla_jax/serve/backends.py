"""The model behind one interface: ``backend.sample(obs, noise) -> normalized actions`` for jax / torch / onnx.

``obs`` is a batch of observations (vla_jax/batch.py keys and dtypes, leading batch axis B), ``noise`` float32
[B, H, A] the flow's initial noise (ignored by the discrete head); the result is float32 [B, H, A] in normalized
units. ``torch`` and ``onnx`` serve an export folder (tools/export.py; no JAX imported), ``jax`` a training
checkpoint. ``pads_batch``: the backend wants a few fixed batch sizes (one compiled program each).
"""

from __future__ import annotations

import json
import os
from typing import Callable, ClassVar

import numpy as np

from vla_jax.data.transforms import Dims
from vla_jax.serve.model_io import ModelInfo

ONNX_DTYPES = {"images": np.float32, "image_mask": np.bool_, "tokens": np.int32, "token_mask": np.bool_,
               "state": np.float32, "state_mask": np.bool_, "action_dim_mask": np.bool_, "noise": np.float32}


class BackendError(ValueError):
    """A model that cannot be served as asked; one line."""


class Backend:
    name: ClassVar[str]
    pads_batch: ClassVar[bool] = False
    info: ModelInfo

    def sample(self, obs: dict[str, np.ndarray], noise: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _dims(c: dict) -> Dims:
    return Dims(int(c["num_cameras"]), int(c["image_size"]), int(c["max_text_len"]), int(c["action_horizon"]),
                int(c["max_action_dim"]), int(c["max_state_dim"]))


def folder_info(folder: str) -> tuple[dict, ModelInfo]:
    """(config.json, ModelInfo) of an export folder."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise BackendError(f"--policy={folder} is not an export folder (no config.json; see tools/export.py)")
    with open(path) as f:
        config = json.load(f)
    stats_path = os.path.join(folder, "norm_stats.json")
    norm_stats = {}
    if os.path.isfile(stats_path):
        with open(stats_path) as f:
            norm_stats = json.load(f)
    export = config.get("export") or {}
    data = (export.get("train_config") or {}).get("data") or {}
    tokenizer = os.path.join(folder, "tokenizer.model")
    return config, ModelInfo(
        source=folder, dims=_dims(config), action_head=config["action_head"], preset=export.get("preset"),
        step=export.get("step"), norm_stats=norm_stats, tokenizer=tokenizer if os.path.isfile(tokenizer) else None,
        eval_ops=tuple(data.get("eval_ops") or ()), prompt_format=str(data.get("prompt_format") or "plain"))


class TorchBackend(Backend):
    """The folder's PyTorch module (``VLAPolicy.from_pretrained``), float32 or the exported dtype."""

    name = "torch"

    def __init__(self, folder: str, threads: int | None = None):
        import torch

        from vla_jax.export.torch_port import VLAPolicy

        _, self.info = folder_info(folder)
        if not os.path.isfile(os.path.join(folder, "model.safetensors")):
            raise BackendError(f"--policy={folder} has no model.safetensors (exported with --format=onnx?); "
                               "use --backend=onnx")
        if threads:
            torch.set_num_threads(threads)
        self.policy = VLAPolicy.from_pretrained(folder)

    def sample(self, obs, noise):
        return self.policy.sample_actions(**obs, noise=noise).float().numpy()


class OnnxBackend(Backend):
    """The folder's ``policy.onnx`` on onnxruntime's CPU provider."""

    name = "onnx"

    def __init__(self, folder: str, threads: int | None = None):
        import onnxruntime as ort

        _, self.info = folder_info(folder)
        path = os.path.join(folder, "policy.onnx")
        if not os.path.isfile(path):
            raise BackendError(f"--policy={folder} has no policy.onnx (exported with --format=pytorch?); "
                               "use --backend=torch")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def sample(self, obs, noise):
        feed = {**obs, "noise": noise}
        return self.session.run(["actions"], {k: np.asarray(feed[k], ONNX_DTYPES[k]) for k in self.inputs})[0]


class JaxBackend(Backend):
    """A training checkpoint (``vla_jax.train.checkpoint.load_params``) sampled with jitted ``vla.sample_actions``
    (flow) or ``vla.sample_actions_discrete``; one compiled program per padded batch size."""

    name = "jax"
    pads_batch = True

    def __init__(self, workdir: str, step: int | None = None, ema: bool = False):
        import jax
        import ml_collections

        from vla_jax.export.package import enrich_norm_stats, find_tokenizer
        from vla_jax.models import vla
        from vla_jax.train.checkpoint import CheckpointError, load_params

        try:
            ck = load_params(workdir, step, ema)
        except CheckpointError as e:
            raise BackendError(str(e)) from None
        config = ck.config
        try:
            model = vla.VLA(vla.make_config(ml_collections.ConfigDict(config["model"])))
        except ValueError as e:
            raise BackendError(f"checkpoint {ck.path}: {e}") from None
        cfg, data = model.cfg, config.get("data") or {}
        self.info = ModelInfo(
            source=ck.path, dims=Dims(cfg.num_cameras, cfg.image_size, cfg.max_text_len, cfg.action_horizon,
                                      cfg.max_action_dim, cfg.max_state_dim),
            action_head=cfg.action_head, preset=config.get("preset"), step=ck.step,
            norm_stats=enrich_norm_stats(ck.norm_stats, config) or {}, tokenizer=find_tokenizer(workdir, config),
            eval_ops=tuple(data.get("eval_ops") or ()), prompt_format=str(data.get("prompt_format") or "plain"))
        if cfg.action_head == "discrete":
            fn = lambda p, obs, noise: vla.sample_actions_discrete(model, p, obs)  # noqa: E731
        else:
            fn = lambda p, obs, noise: vla.sample_actions(model, p, obs, noise)  # noqa: E731
        self._fn = jax.jit(fn)
        self.params = jax.device_put(ck.params)

    def sample(self, obs, noise):
        return np.asarray(self._fn(self.params, obs, noise))


def _from_folder(cls: type[Backend]) -> Callable:
    def load(policy: str | None, workdir: str | None, step: int | None, ema: bool, threads: int | None) -> Backend:
        if policy is None or workdir is not None:
            raise BackendError(f"--backend={cls.name} serves an export folder: pass --policy=DIR (not --workdir)")
        return cls(policy, threads)

    return load


def _from_checkpoint(policy, workdir, step, ema, threads) -> Backend:
    if workdir is None or policy is not None:
        raise BackendError("--backend=jax serves a training checkpoint: pass --workdir=RUN[:STEP] (not --policy)")
    return JaxBackend(workdir, step, ema)


BACKENDS: dict[str, Callable[..., Backend]] = {
    "jax": _from_checkpoint,
    "torch": _from_folder(TorchBackend),
    "onnx": _from_folder(OnnxBackend),
}


def default_backend(policy: str | None, workdir: str | None) -> str:
    """jax for a checkpoint; torch for an export folder with model.safetensors, else onnx."""
    if workdir is not None:
        return "jax"
    return "torch" if policy and os.path.isfile(os.path.join(policy, "model.safetensors")) else "onnx"


def load_backend(name: str | None = None, *, policy: str | None = None, workdir: str | None = None,
                 step: int | None = None, ema: bool = False, threads: int | None = None) -> Backend:
    """The backend ``name`` (default: :func:`default_backend`) for an export folder or a training checkpoint."""
    if (policy is None) == (workdir is None):
        raise BackendError("pass exactly one of --policy=DIR (export folder) and --workdir=RUN[:STEP] (checkpoint)")
    name = name or default_backend(policy, workdir)
    if name not in BACKENDS:
        raise BackendError(f"--backend={name} is not one of {', '.join(BACKENDS)}")
    return BACKENDS[name](policy, workdir, step, ema, threads)
