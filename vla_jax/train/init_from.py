"""Initialise parameters from a vla_jax checkpoint (``config.init.from_checkpoint``, e.g. a grounding
stage before co-training: every parameter whose name and shape match is loaded) or the backbone from a
big_vision-format PaliGemma ``.npz`` (``config.init.from_npz``).

The file holds flat names such as ``params/img/embedding/kernel`` or
``params/llm/layers/attn/q_einsum/w`` (layers stacked on axis 0). Whatever matches our ``img``,
``img_proj`` and ``llm`` expert-0 weights is loaded, reshaped where layouts differ:

===========================================================  ======================================  ==============
PaliGemma (big_vision)                                       ours (``params/...``)                    layout change
===========================================================  ======================================  ==============
img/embedding/{kernel,bias}                                  img/embedding/{w,b}                      -
img/pos_embedding                                            img/pos_embedding                        -
img/Transformer/encoderblock/LayerNorm_{0,1}/{scale,bias}    img/blocks/ln_{attn,mlp}/{scale,bias}    -
img/Transformer/encoderblock/MultiHeadDotProductAttention_0/ img/blocks/qkv/{w,b}                     stack q,k,v on a new axis
  {query,key,value}/{kernel,bias}
  .../out/{kernel,bias}                                      img/blocks/out/{w,b}                     -
img/Transformer/encoderblock/MlpBlock_0/Dense_{0,1}/...      img/blocks/mlp_{in,out}/{w,b}            -
img/Transformer/encoder_norm/{scale,bias}                    img/ln_final/{scale,bias}                -
img/head/{kernel,bias}                                       img_proj/{w,b}                           -
llm/embedder/input_embedding                                 llm/embedding                            -
llm/layers/attn/q_einsum/w          [L, N, D, h]             llm/layers/q_0/w         [L, D, N, h]    transpose
llm/layers/attn/kv_einsum/w         [L, 2, K, D, h]          llm/layers/kv_0/w        [L, 2, D, K, h] transpose
llm/layers/attn/qkv_einsum/w        [L, 3, N, D, h] (N == K) q_0 and kv_0                             split + transpose
llm/layers/attn/attn_vec_einsum/w   [L, N, h, D]             llm/layers/attn_out_0/w                  -
llm/layers/mlp/gating_einsum        [L, 2, D, F]             llm/layers/gating_0/w                    -
llm/layers/mlp/linear               [L, F, D]                llm/layers/mlp_out_0/w                   -
llm/layers/pre_attention_norm/scale, pre_ffw_norm/scale      llm/layers/pre_{attn,mlp}_norm_0/scale   -
llm/final_norm/scale                                         llm/final_norm_0/scale                   -
===========================================================  ======================================  ==============

Everything else (action expert ``*_1``, state/action projections, time MLP) keeps its fresh init.
Unscanned models (``scan_layers=False``: ``blocks/`` -> ``block_<i>/``, ``layers/`` -> ``layer_<i>/``)
get per-layer slices.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import jax
import numpy as np

from vla_jax.train import checkpoint as ckpt_lib
from vla_jax.train.sharding import path_str

_VIT = "img/Transformer/encoderblock/"
_MHA = _VIT + "MultiHeadDotProductAttention_0/"
_LLM = "llm/layers/"


def _same(x):
    return x


# ours (scanned layout, without "params/") -> (their names, converter)
RULES: dict[str, tuple[tuple[str, ...], Callable]] = {
    "img/embedding/w": (("img/embedding/kernel",), _same),
    "img/embedding/b": (("img/embedding/bias",), _same),
    "img/pos_embedding": (("img/pos_embedding",), _same),
    "img/blocks/ln_attn/scale": ((_VIT + "LayerNorm_0/scale",), _same),
    "img/blocks/ln_attn/bias": ((_VIT + "LayerNorm_0/bias",), _same),
    "img/blocks/ln_mlp/scale": ((_VIT + "LayerNorm_1/scale",), _same),
    "img/blocks/ln_mlp/bias": ((_VIT + "LayerNorm_1/bias",), _same),
    "img/blocks/qkv/w": (tuple(_MHA + f"{n}/kernel" for n in ("query", "key", "value")),
                         lambda q, k, v: np.stack([q, k, v], axis=2)),  # [L, W, 3, N, h]
    "img/blocks/qkv/b": (tuple(_MHA + f"{n}/bias" for n in ("query", "key", "value")),
                         lambda q, k, v: np.stack([q, k, v], axis=1)),  # [L, 3, N, h]
    "img/blocks/out/w": ((_MHA + "out/kernel",), _same),
    "img/blocks/out/b": ((_MHA + "out/bias",), _same),
    "img/blocks/mlp_in/w": ((_VIT + "MlpBlock_0/Dense_0/kernel",), _same),
    "img/blocks/mlp_in/b": ((_VIT + "MlpBlock_0/Dense_0/bias",), _same),
    "img/blocks/mlp_out/w": ((_VIT + "MlpBlock_0/Dense_1/kernel",), _same),
    "img/blocks/mlp_out/b": ((_VIT + "MlpBlock_0/Dense_1/bias",), _same),
    "img/ln_final/scale": (("img/Transformer/encoder_norm/scale",), _same),
    "img/ln_final/bias": (("img/Transformer/encoder_norm/bias",), _same),
    "img_proj/w": (("img/head/kernel",), _same),
    "img_proj/b": (("img/head/bias",), _same),
    "llm/embedding": (("llm/embedder/input_embedding",), _same),
    "llm/layers/q_0/w": ((_LLM + "attn/q_einsum/w",), lambda w: w.transpose(0, 2, 1, 3)),
    "llm/layers/kv_0/w": ((_LLM + "attn/kv_einsum/w",), lambda w: w.transpose(0, 1, 3, 2, 4)),
    "llm/layers/attn_out_0/w": ((_LLM + "attn/attn_vec_einsum/w",), _same),
    "llm/layers/gating_0/w": ((_LLM + "mlp/gating_einsum",), _same),
    "llm/layers/mlp_out_0/w": ((_LLM + "mlp/linear",), _same),
    "llm/layers/pre_attn_norm_0/scale": ((_LLM + "pre_attention_norm/scale",), _same),
    "llm/layers/pre_mlp_norm_0/scale": ((_LLM + "pre_ffw_norm/scale",), _same),
    "llm/final_norm_0/scale": (("llm/final_norm/scale",), _same),
}
# Gemma variants with as many KV heads as query heads store one fused qkv_einsum [L, 3, N, D, h].
FUSED_QKV = {
    "llm/layers/q_0/w": lambda w: w[:, 0].transpose(0, 2, 1, 3),
    "llm/layers/kv_0/w": lambda w: w[:, 1:].transpose(0, 1, 3, 2, 4),
}


class InitFromError(ValueError):
    """The .npz or checkpoint cannot be read; one line naming the ``config.init`` field."""


@dataclasses.dataclass
class InitReport:
    loaded: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (ours, theirs)
    fresh: list[str] = dataclasses.field(default_factory=list)  # ours, no source in the file
    mismatched: list[tuple[str, str, tuple, tuple]] = dataclasses.field(default_factory=list)  # ours, theirs, ours', theirs'
    unused: list[str] = dataclasses.field(default_factory=list)  # names in the file nobody took
    source: str = "npz"

    def format(self) -> str:
        lines = [f"init from {self.source}: {len(self.loaded)} loaded, {len(self.fresh)} freshly initialized, "
                 f"{len(self.mismatched)} shape-mismatched, {len(self.unused)} unused in file"]
        lines += [f"  loaded      {o}  <-  {t}" for o, t in self.loaded]
        lines += [f"  MISMATCHED  {o} {so}  <-  {t} {st} (kept fresh init)" for o, t, so, st in self.mismatched]
        lines += [f"  fresh       {o}" for o in self.fresh]
        lines += [f"  unused      {u}" for u in self.unused]
        return "\n".join(lines)


def _canonical(name: str) -> str:
    return name[len("params/"):] if name.startswith("params/") else name


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """Flat ``{name without 'params/': array}``; per-layer ``encoderblock_<i>`` ViT entries are stacked."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {_canonical(k): f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise InitFromError(f"config.init.from_npz={path!r} cannot be read as .npz: {e}") from None
    per_layer = {}
    for k in list(arrays):
        m = re.match(r"img/Transformer/encoderblock_(\d+)/(.*)", k)
        if m:
            per_layer.setdefault(m.group(2), {})[int(m.group(1))] = arrays.pop(k)
    for rest, layers in per_layer.items():
        arrays[_VIT + rest] = np.stack([layers[i] for i in sorted(layers)])
    return arrays


def _scan_name(name: str) -> tuple[str, int | None]:
    """Our unscanned per-layer name -> (scanned name, layer index)."""
    m = re.match(r"(img/)block_(\d+)/(.*)", name) or re.match(r"(llm/)layer_(\d+)/(.*)", name)
    if not m:
        return name, None
    stacked = "blocks" if m.group(1) == "img/" else "layers"
    return f"{m.group(1)}{stacked}/{m.group(3)}", int(m.group(2))


def load_paligemma(path: str, abstract_params) -> tuple[dict[str, np.ndarray], InitReport]:
    """Maps the file onto ``abstract_params`` (our ``{"params": ...}`` tree; arrays or ShapeDtypeStructs).

    Returns ``({"params/...": float32 array}, report)``; the dict feeds
    ``state.create_train_state(param_overrides=...)``.
    """
    theirs = _read_npz(path)
    used: set[str] = set()
    out: dict[str, np.ndarray] = {}
    report = InitReport()
    for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
        full = path_str(p)
        ours = _canonical(full)
        scanned, layer = _scan_name(ours)
        rule = RULES.get(scanned)
        sources, convert = rule if rule else ((), None)
        if rule and not all(s in theirs for s in sources) and scanned in FUSED_QKV \
                and _LLM + "attn/qkv_einsum/w" in theirs:
            sources, convert = (_LLM + "attn/qkv_einsum/w",), FUSED_QKV[scanned]
        if not rule or not all(s in theirs for s in sources):
            report.fresh.append(ours)
            continue
        used.update(sources)
        value = np.asarray(convert(*[theirs[s] for s in sources]))
        if layer is not None:
            value = value[layer] if value.shape[0] > layer else value
        their_name = "+".join(sources) if len(sources) == 1 else sources[0].rsplit("/", 2)[0] + "/{q,k,v}"
        if tuple(value.shape) != tuple(leaf.shape):
            report.mismatched.append((ours, their_name, tuple(leaf.shape), tuple(value.shape)))
            continue
        out[full] = value.astype(np.float32)
        report.loaded.append((ours, their_name))
    report.unused = sorted(k for k in theirs if k not in used)
    return out, report


def load_checkpoint(spec: str, abstract_params, ema: bool = False,
                    action_expert: str = "pi0") -> tuple[dict[str, np.ndarray], InitReport]:
    """``spec`` = ``WORKDIR`` (newest step) or ``WORKDIR:STEP`` of a vla_jax training run. Loads its parameters
    (``ema``: the EMA ones) wherever name and shape match ``abstract_params``; the rest keeps its fresh init.
    Returns ``({"params/...": float32 array}, report)`` like :func:`load_paligemma`. A run whose
    ``config.model.action_expert`` (pi0 / pi05) differs from ``action_expert`` is refused (one line): the two
    share a backbone but not the action expert's inputs and norms."""
    workdir, _, step = spec.rpartition(":") if re.fullmatch(r".+:\d+", spec) else (spec, "", "")
    try:
        loaded = ckpt_lib.load_params(workdir, int(step) if step else None, ema=ema)
    except ckpt_lib.CheckpointError as e:
        raise InitFromError(f"config.init.from_checkpoint={spec!r}: {e}") from None
    theirs_expert = loaded.config.get("model", {}).get("action_expert", "pi0")
    if loaded.config.get("model", {}).get("action_head", "flow") == "flow" and theirs_expert != action_expert:
        raise InitFromError(f"config.init.from_checkpoint={spec!r} holds {theirs_expert} weights but this run's "
                            f"config.model.action_expert={action_expert!r}; start from a {action_expert} checkpoint "
                            f"or train with config.model.action_expert={theirs_expert!r}")
    theirs_tree = loaded.params
    theirs = {path_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(theirs_tree)[0]}
    out: dict[str, np.ndarray] = {}
    report = InitReport(source=f"checkpoint {spec}" + (" (EMA)" if ema else ""))
    ours = set()
    for p, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
        full = path_str(p)
        ours.add(full)
        if full not in theirs:
            report.fresh.append(_canonical(full))
        elif tuple(theirs[full].shape) != tuple(leaf.shape):
            report.mismatched.append((_canonical(full), _canonical(full), tuple(leaf.shape), theirs[full].shape))
        else:
            out[full] = theirs[full].astype(np.float32)
            report.loaded.append((_canonical(full), _canonical(full)))
    report.unused = sorted(_canonical(k) for k in theirs if k not in ours)
    return out, report
