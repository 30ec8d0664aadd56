"""openpi pi0 / pi0.5 <-> vla_jax: parameter names and layouts, checkpoint import / export, parity against openpi
fixtures.

openpi's params tree (``PaliGemma/img/...``, ``PaliGemma/llm/...`` with ``_1`` for the action expert,
``state_proj``, ``action_in_proj``, ``action_time_mlp_in/out``, ``action_out_proj``) maps one-to-one onto the
``pi0`` core (scanned layers, ``config.model.openpi_semantics=True``); openpi's pi0.5 tree onto the ``pi05``
preset (``config.model.action_expert="pi05"``). Names are ``/``-joined, vla_jax's without the leading
``params/``; L = layers, D = width, N / K = query / key-value heads, h = head dim:

=========================================================  ===========================  =======================
openpi                                                     vla_jax                      layout change
=========================================================  ===========================  =======================
PaliGemma/img/embedding/{kernel,bias}                      img/embedding/{w,b}          -
PaliGemma/img/pos_embedding                                img/pos_embedding            -
.../encoderblock/LayerNorm_{0,1}/{scale,bias}              img/blocks/ln_{attn,mlp}/..  -
.../MultiHeadDotProductAttention_0/{query,key,value}/...   img/blocks/qkv/{w,b}         stacked on a new axis
.../MultiHeadDotProductAttention_0/out/{kernel,bias}       img/blocks/out/{w,b}         -
.../MlpBlock_0/Dense_{0,1}/{kernel,bias}                   img/blocks/mlp_{in,out}/..   -
PaliGemma/img/Transformer/encoder_norm/{scale,bias}        img/ln_final/{scale,bias}    -
PaliGemma/img/head/{kernel,bias}                           img_proj/{w,b}               -
PaliGemma/llm/embedder/input_embedding                     llm/embedding                -
PaliGemma/llm/layers/attn/q_einsum{,_1}/w   [L, N, D, h]   llm/layers/q_{0,1}/w         [L, D, N, h]
PaliGemma/llm/layers/attn/kv_einsum{,_1}/w  [L, 2, K, D, h] llm/layers/kv_{0,1}/w       [L, 2, D, K, h]
PaliGemma/llm/layers/attn/attn_vec_einsum{,_1}/w           llm/layers/attn_out_{0,1}/w  -
PaliGemma/llm/layers/mlp{,_1}/{gating_einsum,linear}       llm/layers/{gating,mlp_out}_{0,1}/w  -
PaliGemma/llm/layers/pre_{attention,ffw}_norm{,_1}/scale   llm/layers/pre_{attn,mlp}_norm_{0,1}/scale  -
PaliGemma/llm/final_norm{,_1}/scale                        llm/final_norm_{0,1}/scale   -
{state_proj,action_in_proj,action_out_proj}/{kernel,bias}  same name /{w,b}             -
action_time_mlp_{in,out}/{kernel,bias}                     time_mlp_{in,out}/{w,b}      -
=========================================================  ===========================  =======================

pi0.5 (:data:`VARIANTS`): no ``state_proj``; ``time_mlp_{in,out}`` keep their name; the action expert's norms
``PaliGemma/llm/layers/pre_{attention,ffw}_norm_1/Dense_0/{kernel,bias}`` and ``PaliGemma/llm/final_norm_1/Dense_0/..``
map to ``llm/layers/pre_{attn,mlp}_norm_1/modulation/{w,b}`` and ``llm/final_norm_1/modulation/{w,b}``.

Every conversion is a pure re-layout (transpose / stack / split), so both directions are exact in float32.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from flax import traverse_util

CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")  # openpi's pi0 camera order
LOSS_RTOL = 1e-4  # openpi's own loss from recorded noise / time differs by up to 2.3e-5 near t = 0 or 1
ATOL = 1e-5
BACKEND_ATOL = {"jax": ATOL, "torch": 1e-4, "onnx": 1e-4}  # the exported runtimes: the export's parity gate
NORM_KEYS = ("mean", "std", "q01", "q99")
OPENPI_STD_EPS = 1e-6  # openpi normalizes (x - mean) / (std + 1e-6)
VLA_STD_EPS = 1e-8  # vla_jax.data.norm_stats: (x - mean) / (std + 1e-8)


class OpenpiError(ValueError):
    """An openpi tree, checkpoint or fixture that does not convert; one line naming what is wrong."""


def _same(x):
    return x


def _xp(x):
    return np if isinstance(x, np.ndarray) else jnp


def _stack(axis: int) -> Callable:
    return lambda q, k, v: _xp(q).stack([q, k, v], axis=axis)


def _unstack(axis: int) -> Callable:
    return lambda x: tuple(_xp(x).take(x, i, axis=axis) for i in range(3))


def _transpose(*axes: int) -> Callable:
    return lambda x: _xp(x).transpose(x, axes)


_IMG = "PaliGemma/img/"
_VIT = _IMG + "Transformer/encoderblock/"
_MHA = _VIT + "MultiHeadDotProductAttention_0/"
_LLM = "PaliGemma/llm/"


def _rules(variant: str) -> dict[str, tuple[tuple[str, ...], Callable, Callable]]:
    """vla_jax name -> (openpi names, openpi arrays -> ours, ours -> openpi arrays (a tuple)) for ``variant``
    (``pi0`` | ``pi05``, :data:`VARIANTS`)."""
    one = lambda theirs, to=_same, back=_same: ((theirs,), to, lambda x: (back(x),))  # noqa: E731
    rules = {
        "img/embedding/w": one(_IMG + "embedding/kernel"),
        "img/embedding/b": one(_IMG + "embedding/bias"),
        "img/pos_embedding": one(_IMG + "pos_embedding"),
        "img/blocks/qkv/w": (tuple(_MHA + f"{n}/kernel" for n in ("query", "key", "value")), _stack(2), _unstack(2)),
        "img/blocks/qkv/b": (tuple(_MHA + f"{n}/bias" for n in ("query", "key", "value")), _stack(1), _unstack(1)),
        "img/ln_final/scale": one(_IMG + "Transformer/encoder_norm/scale"),
        "img/ln_final/bias": one(_IMG + "Transformer/encoder_norm/bias"),
        "img_proj/w": one(_IMG + "head/kernel"),
        "img_proj/b": one(_IMG + "head/bias"),
        "llm/embedding": one(_LLM + "embedder/input_embedding"),
    }
    norm, dense = (("scale", "scale"), ("bias", "bias")), (("w", "kernel"), ("b", "bias"))
    for ours, theirs, leaves in (("ln_attn", "LayerNorm_0", norm), ("ln_mlp", "LayerNorm_1", norm),
                                 ("out", "MultiHeadDotProductAttention_0/out", dense),
                                 ("mlp_in", "MlpBlock_0/Dense_0", dense), ("mlp_out", "MlpBlock_0/Dense_1", dense)):
        for a, b in leaves:
            rules[f"img/blocks/{ours}/{a}"] = one(f"{_VIT}{theirs}/{b}")
    for i, sfx in ((0, ""), (1, "_1")):
        rules |= {
            f"llm/layers/q_{i}/w": one(f"{_LLM}layers/attn/q_einsum{sfx}/w", _transpose(0, 2, 1, 3), _transpose(0, 2, 1, 3)),
            f"llm/layers/kv_{i}/w": one(f"{_LLM}layers/attn/kv_einsum{sfx}/w", _transpose(0, 1, 3, 2, 4),
                                        _transpose(0, 1, 3, 2, 4)),
            f"llm/layers/attn_out_{i}/w": one(f"{_LLM}layers/attn/attn_vec_einsum{sfx}/w"),
            f"llm/layers/gating_{i}/w": one(f"{_LLM}layers/mlp{sfx}/gating_einsum"),
            f"llm/layers/mlp_out_{i}/w": one(f"{_LLM}layers/mlp{sfx}/linear"),
        }
        norms = (("layers/pre_attn_norm", "layers/pre_attention_norm"), ("layers/pre_mlp_norm", "layers/pre_ffw_norm"),
                 ("final_norm", "final_norm"))
        for ours, theirs in norms:
            if i == 1 and variant == "pi05":  # adaptive RMSNorm: a Dense of the time conditioning, no scale
                rules[f"llm/{ours}_1/modulation/w"] = one(f"{_LLM}{theirs}_1/Dense_0/kernel")
                rules[f"llm/{ours}_1/modulation/b"] = one(f"{_LLM}{theirs}_1/Dense_0/bias")
            else:
                rules[f"llm/{ours}_{i}/scale"] = one(f"{_LLM}{theirs}{sfx}/scale")
    for ours, theirs in VARIANTS[variant]["linears"]:
        rules[f"{ours}/w"] = one(f"{theirs}/kernel")
        rules[f"{ours}/b"] = one(f"{theirs}/bias")
    return rules


# openpi model -> the vla_jax preset computing it, how openpi normalizes its state and actions (vla_jax's method:
# z-score, or quantiles [q01, q99] -> [-1, 1]), its top-level linears (ours, openpi's)
VARIANTS = {
    "pi0": dict(preset="pi0", normalization="normal", linears=(("state_proj", "state_proj"), ("action_in_proj", "action_in_proj"),
                                       ("action_out_proj", "action_out_proj"), ("time_mlp_in", "action_time_mlp_in"),
                                       ("time_mlp_out", "action_time_mlp_out"))),
    "pi05": dict(preset="pi05", normalization="bounds_q99", linears=(("action_in_proj", "action_in_proj"), ("action_out_proj", "action_out_proj"),
                                         ("time_mlp_in", "time_mlp_in"), ("time_mlp_out", "time_mlp_out"))),
}
RULES = {variant: _rules(variant) for variant in VARIANTS}


def openpi_variant(names) -> str:
    """``pi0`` or ``pi05`` from openpi parameter names (pi0.5 has ``time_mlp_in``, pi0 ``action_time_mlp_in``)."""
    return "pi05" if "time_mlp_in/kernel" in names else "pi0"


def vla_jax_variant(names) -> str:
    """``pi0`` or ``pi05`` from vla_jax parameter names (pi0.5's final expert norm is adaptive)."""
    return "pi05" if "llm/final_norm_1/modulation/w" in names else "pi0"


# ----------------------------------------------------------------------------------------- trees
def flatten(tree: dict) -> dict:
    """Nested dict -> ``{"a/b/c": leaf}``."""
    return traverse_util.flatten_dict(tree, sep="/")


def unflatten(flat: dict) -> dict:
    """``{"a/b/c": leaf}`` -> nested dict."""
    return traverse_util.unflatten_dict(flat, sep="/")


def _flat(tree: dict) -> dict:
    return flatten(tree) if any(isinstance(v, dict) for v in tree.values()) else dict(tree)


def to_vla_jax(openpi_params: dict) -> dict:
    """openpi's pi0 or pi0.5 params (nested, or flat ``/``-joined names; :func:`openpi_variant`) -> vla_jax model
    variables ``{"params": nested}``.

    Raises OpenpiError (one line) for an openpi name no rule takes or one the model needs that is missing."""
    theirs = _flat(openpi_params)
    variant = openpi_variant(theirs)
    rules = RULES[variant]
    taken = {s for sources, _, _ in rules.values() for s in sources}
    extra = sorted(set(theirs) - taken)
    if extra:
        raise OpenpiError(f"openpi parameter {extra[0]} has no vla_jax counterpart in {variant} ({len(extra)} left "
                          "over; pi0 and pi0.5 convert, pi0-FAST does not)")
    missing = sorted(taken - set(theirs))
    if missing:
        raise OpenpiError(f"openpi {variant} parameter {missing[0]} is missing ({len(missing)} missing)")
    return {"params": unflatten({ours: to(*(theirs[s] for s in sources)) for ours, (sources, to, _) in rules.items()})}


def to_openpi(variables: dict) -> dict:
    """vla_jax model variables ``{"params": ...}`` of a ``pi0`` or ``pi05`` core (flow head, scanned, no add-ons;
    :func:`vla_jax_variant`) -> openpi's nested params tree. Raises OpenpiError (one line) for a vla_jax name
    without an openpi counterpart or one missing."""
    ours = flatten(variables["params"] if set(variables) == {"params"} else variables)
    rules = RULES[vla_jax_variant(ours)]
    extra = sorted(set(ours) - set(rules))
    if extra:
        raise OpenpiError(f"vla_jax parameter {extra[0]} has no openpi counterpart ({len(extra)} left over; "
                          "openpi's pi0 has no add-ons and scans its layers)")
    missing = sorted(set(rules) - set(ours))
    if missing:
        raise OpenpiError(f"vla_jax parameter {missing[0]} is missing ({len(missing)} missing)")
    out = {}
    for name, (sources, _, back) in rules.items():
        out |= dict(zip(sources, back(ours[name])))
    return unflatten(out)


# ----------------------------------------------------------------------------------------- config
def infer_model(openpi_params: dict) -> dict:
    """Model sizes read from the shapes of openpi's pi0 / pi0.5 params (nested or flat): ``{"a.b": value}``
    config.model overrides. Action horizon, prompt length and camera count are not in the weights (nor, for
    pi0.5, the state dim: it is written into the prompt)."""
    p = _flat(openpi_params)

    def shape(name: str) -> tuple[int, ...]:
        if name not in p:
            raise OpenpiError(f"openpi parameter {name} is missing")
        return tuple(p[name].shape)

    patch, _, _, vit_width = shape(_IMG + "embedding/kernel")
    depth, heads, llm_width, head_dim = shape(_LLM + "layers/attn/q_einsum/w")
    grid = math.isqrt(shape(_IMG + "pos_embedding")[1])
    return {
        "image_size": grid * patch,
        "vocab_size": shape(_LLM + "embedder/input_embedding")[0],
        "max_action_dim": shape("action_in_proj/kernel")[0],
        **({"max_state_dim": shape("state_proj/kernel")[0]} if "state_proj/kernel" in p else {}),
        "vit.width": vit_width, "vit.patch_size": patch,
        "vit.depth": shape(_VIT + "LayerNorm_0/scale")[0],
        "vit.mlp_dim": shape(_VIT + "MlpBlock_0/Dense_0/kernel")[-1],
        "vit.num_heads": shape(_MHA + "query/kernel")[2],
        "llm.width": llm_width, "llm.depth": depth, "llm.num_heads": heads, "llm.head_dim": head_dim,
        "llm.num_kv_heads": shape(_LLM + "layers/attn/kv_einsum/w")[2],
        "llm.mlp_dim": shape(_LLM + "layers/mlp/gating_einsum")[-1],
        "expert.width": shape(_LLM + "layers/attn/q_einsum_1/w")[2],
        "expert.mlp_dim": shape(_LLM + "layers/mlp_1/gating_einsum")[-1],
    }


def openpi_config(openpi_params: dict, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """The ``pi0`` or ``pi05`` preset (configs/pretrain.py, ``openpi_semantics=True``; :func:`openpi_variant`) with
    the sizes of ``openpi_params`` (:func:`infer_model`) and ``overrides`` (``{"model.dtype": "float32", ...}``)."""
    from vla_jax.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sizes = {f"model.{k}": v for k, v in infer_model(openpi_params).items()}
    preset = VARIANTS[openpi_variant(_flat(openpi_params))]["preset"]
    return load_config(os.path.join(root, "configs", "pretrain.py") + f":size={preset}", sizes | (overrides or {}))


def abstract_variables(model_config: ml_collections.ConfigDict) -> dict:
    """``jax.eval_shape`` of the model's variables ``{"params": ...}`` (ShapeDtypeStructs, nothing allocated)."""
    import flax.linen as nn

    from vla_jax.models.summary import dummy_batch
    from vla_jax.models.vla import VLA, make_config

    model = VLA(make_config(model_config))
    batch = dummy_batch(model.cfg, 1)
    init = lambda: nn.unbox(model.init(jax.random.key(0), {k: jnp.zeros(v.shape, v.dtype) for k, v in batch.items()},
                                       jax.random.key(0), method=VLA.compute_loss))  # noqa: E731
    return jax.eval_shape(init)


def check_against(variables: dict, abstract: dict) -> None:
    """Raises OpenpiError (one line) unless ``variables`` has exactly the names and shapes of ``abstract``."""
    have = {k: tuple(v.shape) for k, v in flatten(variables["params"]).items()}
    want = {k: tuple(v.shape) for k, v in flatten(abstract["params"]).items()}
    for name in sorted(set(have) | set(want)):
        if name not in have:
            raise OpenpiError(f"converted params lack {name} {want[name]} of the model")
        if name not in want:
            raise OpenpiError(f"converted parameter {name} has no place in the model")
        if have[name] != want[name]:
            raise OpenpiError(f"converted parameter {name} has shape {have[name]}, the model needs {want[name]}")


# ----------------------------------------------------------------------------------------- checkpoints
def checkpoint_path(ckpt: str) -> epath.Path:
    """A local directory (made absolute, as orbax needs) or a bucket URL such as ``gs://openpi-assets/...``, through
    the file API the checkpointer uses (etils.epath)."""
    return epath.Path(ckpt if "://" in ckpt else os.path.abspath(ckpt))


def read_checkpoint(ckpt: str) -> dict:
    """``<ckpt>/params`` (openpi's orbax PyTree checkpoint ``{"params": ...}``) -> flat ``{name: float32 array}``.
    ``ckpt`` may be local or a bucket URL (:func:`checkpoint_path`)."""
    import orbax.checkpoint as ocp

    path = checkpoint_path(ckpt) / "params"
    try:
        found = (path / "_METADATA").exists()
    except Exception as e:  # noqa: BLE001 - a bucket's file system raises its own types (no network, no access)
        raise OpenpiError(f"{path} cannot be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not found:
        raise OpenpiError(f"{ckpt} is not an openpi checkpoint (no orbax PyTree checkpoint at {path})")
    handler = ocp.PyTreeCheckpointHandler()
    try:
        tree = handler.metadata(path).tree
        if not isinstance(tree, dict) or "params" not in tree:
            raise OpenpiError(f"{path} holds no 'params' tree (top-level: {sorted(tree) if isinstance(tree, dict) else tree})")
        target = {"params": jax.tree.map(lambda _: 0, tree["params"])}
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
        restored = handler.restore(path, args=ocp.args.PyTreeRestore(item=target, restore_args=args,
                                                                                 partial_restore=True))
    except OpenpiError:
        raise
    except Exception as e:  # noqa: BLE001 - orbax / tensorstore raise many types; one line each
        raise OpenpiError(f"{path} cannot be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    finally:
        handler.close()
    return {k: np.asarray(v, np.float32) for k, v in flatten(restored["params"]).items()}


def read_norm_stats(ckpt: str, asset_id: str | None) -> tuple[str, dict] | None:
    """``<ckpt>/assets/<asset_id>/norm_stats.json`` -> (asset id, openpi ``{"state": {...}, "actions": {...}}``).
    Without ``asset_id`` the only asset directory is taken (None when there is none). Local or bucket URL."""
    assets = checkpoint_path(ckpt) / "assets"
    if asset_id is None:
        found = sorted(d.name for d in assets.iterdir() if (d / "norm_stats.json").exists()) if assets.is_dir() else []
        if not found:
            return None
        if len(found) > 1:
            raise OpenpiError(f"{assets} has norm stats for several assets ({', '.join(found)}); pass --asset_id")
        asset_id = found[0]
    path = assets / asset_id / "norm_stats.json"
    if not path.exists():
        raise OpenpiError(f"{path} does not exist")
    try:
        stats = json.loads(path.read_text())["norm_stats"]
    except (ValueError, KeyError, TypeError) as e:
        raise OpenpiError(f"{path} is not openpi norm stats ({{\"norm_stats\": {{...}}}}): {e}") from None
    return asset_id, stats


def convert_norm_stats(stats: dict, dataset: str, max_state_dim: int, max_action_dim: int,
                       method: str = "normal") -> dict:
    """openpi ``{"state": {mean, std, q01, q99}, "actions": {...}}`` -> vla_jax's checkpoint norm-stats item
    ``{dataset: {"action": ..., "state": ..., "action_normalization": "normal", ...}}``
    (vla_jax/data/norm_stats.py). ``std`` is shifted by 1e-6 - 1e-8 so vla_jax's ``(x - mean) / (std + 1e-8)``
    equals openpi's ``(x - mean) / (std + 1e-6)``; openpi's std is kept as ``std_openpi``."""
    out = {"dataset": dataset, "source": "openpi norm_stats.json", "action_normalization": method,
           "state_normalization": method}
    for theirs, ours, limit in (("state", "state", max_state_dim), ("actions", "action", max_action_dim)):
        block = stats.get(theirs)
        if not isinstance(block, dict) or any(k not in block or block[k] is None for k in NORM_KEYS):
            raise OpenpiError(f"openpi norm stats '{theirs}' need {', '.join(NORM_KEYS)}")
        arrays = {k: np.asarray(block[k], np.float64).reshape(-1) for k in NORM_KEYS}
        dims = {k: a.shape[0] for k, a in arrays.items()}
        if len(set(dims.values())) != 1 or not 1 <= dims["mean"] <= limit:
            raise OpenpiError(f"openpi norm stats '{theirs}' have dims {dims}; they must agree and be 1..{limit} "
                              f"(the model's max {ours} dim)")
        out[ours] = {"mean": arrays["mean"].tolist(), "std": (arrays["std"] + OPENPI_STD_EPS - VLA_STD_EPS).tolist(),
                     "q01": arrays["q01"].tolist(), "q99": arrays["q99"].tolist(), "std_openpi": arrays["std"].tolist()}
        out[f"{ours}_dim"] = dims["mean"]
    return {dataset: out}


@dataclasses.dataclass
class ImportReport:
    ckpt: str
    out: str
    num_params: int
    mapped: list[tuple[str, tuple[str, ...]]]  # (vla_jax name, openpi names)
    sizes: dict
    norm_stats: str  # one line

    def format(self) -> str:
        lines = [f"[import_openpi] {self.ckpt} -> {self.out}: {len(self.mapped)} vla_jax parameters from "
                 f"{sum(len(s) for _, s in self.mapped)} openpi arrays ({self.num_params:,} values), none left over",
                 "  sizes: " + ", ".join(f"{k}={v}" for k, v in self.sizes.items()),
                 f"  norm stats: {self.norm_stats}"]
        lines += [f"  {ours}  <-  {' + '.join(theirs)}" for ours, theirs in self.mapped]
        return "\n".join(lines)


def import_checkpoint(ckpt: str, out: str, asset_id: str | None = None, dataset: str | None = None,
                      overrides: dict | None = None) -> ImportReport:
    """openpi checkpoint directory -> a vla_jax params-only run at ``out`` (step 0, ``write_checkpoint``) with the
    ``pi0`` or ``pi05`` preset adapted to the checkpoint's sizes and its norm stats under ``dataset`` (default: the asset id)."""
    from vla_jax.train import checkpoint as ckpt_lib

    if os.path.isdir(os.path.join(out, "checkpoints")) and ckpt_lib.available_steps(out):
        raise OpenpiError(f"--out={out} already has checkpoints; choose a new run directory")
    theirs = read_checkpoint(ckpt)
    variables = to_vla_jax(theirs)
    config = openpi_config(theirs, overrides)
    check_against(variables, abstract_variables(config.model))
    found = read_norm_stats(ckpt, asset_id)
    norm_stats, note = None, "none (no assets/<asset_id>/norm_stats.json)"
    if found:
        name = dataset or found[0]
        method = VARIANTS[openpi_variant(theirs)]["normalization"]
        norm_stats = convert_norm_stats(found[1], name, config.model.max_state_dim, config.model.max_action_dim,
                                        method)
        note = (f"assets/{found[0]}/norm_stats.json -> dataset '{name}' (state {norm_stats[name]['state_dim']}-D, "
                f"action {norm_stats[name]['action_dim']}-D, {method})")
    ckpt_lib.write_checkpoint(out, variables, config, norm_stats)
    return ImportReport(ckpt=ckpt, out=out, num_params=int(sum(v.size for v in theirs.values())),
                        mapped=[(ours, sources) for ours, (sources, _, _) in RULES[openpi_variant(theirs)].items()],
                        sizes=infer_model(theirs),
                        norm_stats=note)


# ----------------------------------------------------------------------------------------- export
NORM_DEFAULTS = {"action": "bounds_q99", "state": "normal"}  # vla_jax's method where a stats entry names none


def check_model(model: dict, preset: str | None = None) -> None:
    """Raises OpenpiError (one line) unless a saved ``config.model`` is a model openpi's pi0 computes: the flow head
    with ``openpi_semantics`` and no add-ons (the parameter names are checked by :func:`to_openpi`)."""
    why = f"preset {preset!r} has no openpi counterpart"
    if model.get("action_head", "flow") != "flow":
        raise OpenpiError(f"{why}: config.model.action_head={model['action_head']!r} (openpi's pi0 is a flow model)")
    if not model.get("openpi_semantics", False):
        raise OpenpiError(f"{why}: config.model.openpi_semantics is off (its flow head is not openpi's; only the pi0 "
                          "preset and imported openpi runs convert)")
    if model.get("addons"):
        raise OpenpiError(f"{why}: config.model.addons={list(model['addons'])} (openpi's pi0 has no add-ons)")


def robot_datasets(norm_stats: dict | None) -> dict[str, dict]:
    """The entries of a checkpoint's norm stats item that carry both ``state`` and ``action`` statistics."""
    return {name: s for name, s in (norm_stats or {}).items()
            if isinstance(s, dict) and isinstance(s.get("state"), dict) and isinstance(s.get("action"), dict)}


def check_normalization(stats: dict, dataset: str, quantity: str, method: str, keys: tuple[str, ...], target: str,
                        error: type[ValueError]) -> dict:
    """``stats[quantity]`` (a dataset's entry of vla_jax's checkpoint norm stats, ``quantity`` = state | action) if
    vla_jax normalizes it with ``method`` on every dim and it carries ``keys``; else raises ``error`` with one line
    naming ``target`` (e.g. "openpi's pi0")."""
    have = stats.get(f"{quantity}_normalization", NORM_DEFAULTS[quantity])
    if have != method:
        raise error(f"dataset '{dataset}' normalizes {quantity} with {have!r}; {target} normalizes with {method!r} "
                    "only")
    mask = stats.get(f"{quantity}_norm_mask")
    if mask is not None and not all(mask):
        raise error(f"dataset '{dataset}' leaves {quantity} dims {[i for i, m in enumerate(mask) if not m]} "
                    f"unnormalized; {target} normalizes every dim")
    missing = [k for k in keys if stats[quantity].get(k) is None]
    if missing:
        raise error(f"dataset '{dataset}' {quantity} statistics lack {', '.join(missing)} ({target} needs "
                    f"{', '.join(keys)})")
    return stats[quantity]


def to_openpi_norm_stats(stats: dict, dataset: str, variant: str = "pi0") -> dict:
    """One robot dataset's entry of vla_jax's checkpoint norm stats -> openpi's ``{"state": {mean, std, q01, q99},
    "actions": {...}}``, the inverse of :func:`convert_norm_stats`: ``std`` is ``std_openpi`` where present (an
    imported entry, exact), else vla_jax's ``std + 1e-8 - 1e-6`` (so openpi's ``(x - mean) / (std + 1e-6)`` equals
    vla_jax's ``(x - mean) / (std + 1e-8)``). Raises OpenpiError (one line) for a quantity vla_jax does not
    normalize as openpi's ``variant`` does on every dim (pi0: z-score, pi0.5: quantiles)."""
    out = {}
    for ours, theirs in (("state", "state"), ("action", "actions")):
        block = check_normalization(stats, dataset, ours, VARIANTS[variant]["normalization"], NORM_KEYS,
                                    f"openpi's {variant}", OpenpiError)
        std = block.get("std_openpi")
        if std is None:
            std = (np.asarray(block["std"], np.float64) + VLA_STD_EPS - OPENPI_STD_EPS).tolist()
        out[theirs] = {"mean": list(block["mean"]), "std": list(std), "q01": list(block["q01"]),
                       "q99": list(block["q99"])}
    return out


def write_checkpoint(out: str, variables: dict, norm_stats: dict[str, dict]) -> int:
    """vla_jax model variables ``{"params": ...}`` of a ``pi0`` core -> openpi's checkpoint layout at ``out``, the
    one :func:`import_checkpoint` reads: ``out/params`` (orbax PyTree checkpoint ``{"params": <openpi nested>}``,
    float32) and ``out/assets/<name>/norm_stats.json`` (``{"norm_stats": ...}``) for each ``name`` of
    ``norm_stats`` (openpi blocks, :func:`to_openpi_norm_stats`).

    Verified without reading the arrays back: :func:`to_vla_jax` of the openpi tree gives back every vla_jax array
    bit for bit, and the written checkpoint's metadata lists every openpi name with its shape as float32.
    Returns the number of values written. Raises OpenpiError (one line) for variables that do not convert."""
    import orbax.checkpoint as ocp

    ours = {k: np.asarray(v, np.float32) for k, v in flatten(variables["params"] if set(variables) == {"params"}
                                                             else variables).items()}
    theirs = {k: np.ascontiguousarray(v) for k, v in flatten(to_openpi({"params": unflatten(ours)})).items()}
    back = flatten(to_vla_jax(theirs)["params"])
    for name, value in ours.items():
        if not np.array_equal(back[name], value):
            raise OpenpiError(f"vla_jax parameter {name} does not survive openpi's layout and back")
    path = os.path.join(os.path.abspath(out), "params")
    ocp.PyTreeCheckpointer().save(path, {"params": unflatten(theirs)})
    handler = ocp.PyTreeCheckpointHandler()
    try:
        written = {k: (tuple(m.shape), np.dtype(m.dtype)) for k, m in
                   flatten(handler.metadata(epath.Path(path)).tree["params"]).items()}
    finally:
        handler.close()
    want = {k: (v.shape, np.dtype(np.float32)) for k, v in theirs.items()}
    if written != want:
        name = next(k for k in sorted(set(written) | set(want)) if written.get(k) != want.get(k))
        raise OpenpiError(f"{path}: openpi parameter {name} is written as {written.get(name)}, not {want.get(name)}")
    for name, stats in norm_stats.items():
        os.makedirs(os.path.join(out, "assets", name), exist_ok=True)
        with open(os.path.join(out, "assets", name, "norm_stats.json"), "w") as f:
            json.dump({"norm_stats": stats}, f, indent=2)
    return int(sum(v.size for v in theirs.values()))


# ----------------------------------------------------------------------------------------- fixtures / parity
@dataclasses.dataclass
class Fixture:
    """An openpi reference fixture (../shared/fixtures/openpi/README.md format): params, inputs, outputs."""

    params: dict  # flat openpi names -> array
    inputs: dict  # "image/base_0_rgb", "tokens", ...
    outputs: dict  # "prefix_tokens", "velocity", ...

    @classmethod
    def load(cls, path: str) -> "Fixture":
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as e:
            raise OpenpiError(f"{path} cannot be read as .npz: {e}") from None
        groups = {g: {k[len(g) + 1:]: v for k, v in arrays.items() if k.startswith(g + "/")}
                  for g in ("param", "in", "out")}
        if not all(groups.values()):
            raise OpenpiError(f"{path} is not an openpi fixture (needs param/..., in/... and out/... arrays)")
        return cls(groups["param"], groups["in"], groups["out"])

    @property
    def cameras(self) -> tuple[str, ...]:
        names = [c for c in CAMERAS if f"image/{c}" in self.inputs]
        others = sorted(k[len("image/"):] for k in self.inputs if k.startswith("image/") and k[6:] not in CAMERAS)
        return tuple(names + others)

    def config(self) -> ml_collections.ConfigDict:
        """The ``pi0`` preset at the fixture's sizes, float32, unrematerialized."""
        b, h, a = self.inputs["actions"].shape
        return openpi_config(self.params, {"model.dtype": "float32", "model.remat": "none",
                                        "model.action_horizon": h, "model.max_text_len": self.inputs["tokens"].shape[1],
                                        "model.num_cameras": len(self.cameras)})

    def batch(self) -> dict[str, np.ndarray]:
        """The fixture's inputs as a vla_jax batch (vla_jax/batch.py): cameras in openpi's order, every state and
        action dim real (openpi pads inside the model), every chunk step real, no text loss."""
        x = self.inputs
        b, h, a = x["actions"].shape
        tokens = x["tokens"].astype(np.int32)
        no_text = np.zeros(tokens.shape, bool)
        return {
            "images": np.stack([x[f"image/{c}"] for c in self.cameras], axis=1).astype(np.float32),
            "image_mask": np.stack([x[f"image_mask/{c}"] for c in self.cameras], axis=1).astype(bool),
            "tokens": tokens, "token_mask": x["token_mask"].astype(bool), "token_ar": no_text, "token_loss": no_text,
            "state": x["state"].astype(np.float32), "state_mask": np.ones(x["state"].shape, bool),
            "actions": x["actions"].astype(np.float32), "action_dim_mask": np.ones((b, a), bool),
            "action_step_mask": np.ones((b, h), bool), "has_actions": np.ones((b,), bool),
            "source": np.zeros((b,), np.int32),
        }


def model_outputs(model, variables: dict, batch: dict, fixture: Fixture) -> dict[str, np.ndarray]:
    """vla_jax's counterparts of the fixture's outputs: prefix tokens / mask, the suffix's tokens, causal-block
    flags and (pi0.5) the adaptive norms' conditioning for (``in/x_t``, ``in/t``), velocity from one joint pass
    (``velocity``) and through the prefix KV cache (``velocity_cached``), the per-step flow loss [B, H] for the
    fixture's noise and time, and actions sampled from ``in/noise``."""
    from vla_jax.batch import OBSERVATION_KEYS
    from vla_jax.models import vla

    obs = {k: batch[k] for k in OBSERVATION_KEYS}
    x = fixture.inputs

    def prefix(m, o):
        p = m.embed_prefix(vla.masked_state(o))
        return p.tokens, p.mask

    def suffix(m, o, x_t, t):
        tokens, _, ar, cond = m.embed_suffix(vla.masked_state(o)["state"], x_t, t, None)
        return tokens, ar[0], cond

    def cached(m, o, x_t, t):
        return m.suffix_velocity(vla.masked_state(o)["state"], x_t, t, m.encode_prefix(o))

    def loss(m, bt, noise, t):
        sq, elem = m.flow_errors(vla.masked_state(bt), noise, t)
        return sq.sum(-1) / elem.sum(-1)

    run = lambda fn, *args: np.asarray(jax.jit(lambda *a: model.apply(variables, *a, method=fn))(*args))  # noqa: E731
    tokens, mask = jax.jit(lambda o: model.apply(variables, o, method=prefix))(obs)
    out = {"prefix_tokens": np.asarray(tokens), "prefix_mask": np.asarray(mask),
           "velocity": run(vla.VLA.full_velocity, obs, x["x_t"], x["t"]),
           "velocity_cached": run(cached, obs, x["x_t"], x["t"])}
    s_tokens, s_ar, cond = jax.jit(lambda o, x_t, t: model.apply(variables, o, x_t, t, method=suffix))(
        obs, x["x_t"], x["t"])
    out |= {"suffix_tokens": np.asarray(s_tokens), "suffix_ar_mask": np.asarray(s_ar)}
    if "adarms_cond" in fixture.outputs:
        out["adarms_cond"] = np.asarray(cond)
    if "loss_noise" in fixture.outputs:
        out["loss"] = run(loss, batch, fixture.outputs["loss_noise"], fixture.outputs["loss_time"])
    out["sampled"] = np.asarray(jax.jit(lambda v, o, n: vla.sample_actions(model, v, o, n))(variables, obs, x["noise"]))
    return out


REFERENCE = {"velocity_cached": "velocity"}  # our output -> the fixture output it is compared with


@dataclasses.dataclass
class Diff:
    name: str
    max_abs: float
    rel: float  # max |ours - theirs| / max |theirs|
    tol: float
    relative: bool  # tol applies to rel (loss) or max_abs

    @property
    def ok(self) -> bool:
        return (self.rel if self.relative else self.max_abs) <= self.tol

    def format(self) -> str:
        return (f"{self.name:16s} max_abs={self.max_abs:.2e} rel={self.rel:.2e} "
                f"tol={self.tol:.0e} ({'relative' if self.relative else 'abs'}) {'ok' if self.ok else 'FAIL'}")


def compare(ours: dict[str, np.ndarray], fixture: Fixture, atol: float = ATOL) -> list[Diff]:
    """One :class:`Diff` per output; the loss at :data:`LOSS_RTOL` relative, the rest at ``atol``."""
    diffs = []
    for name, value in ours.items():
        ref = fixture.outputs[REFERENCE.get(name, name)]
        if value.shape != ref.shape:
            raise OpenpiError(f"output {name} has shape {value.shape}, the fixture's {ref.shape}")
        err = np.abs(value.astype(np.float64) - ref.astype(np.float64))
        max_abs = float(err.max()) if err.size else 0.0
        rel = max_abs / max(float(np.abs(ref.astype(np.float64)).max()), 1e-30)
        diffs.append(Diff(name, max_abs, rel, LOSS_RTOL if name == "loss" else atol, name == "loss"))
    return diffs


def check_fixture(path: str, backend: str = "jax") -> list[Diff]:
    """Loads a fixture, converts its params as :func:`import_checkpoint` does, runs them in ``backend`` and
    compares at :data:`BACKEND_ATOL`: ``jax`` (vla_jax), ``torch`` (the exported PyTorch port, built from the
    converted variables as ``tools/export.py`` builds it) or ``onnx`` (the port's graphs in onnxruntime; see
    :func:`vla_jax.export.parity.fixture_outputs`)."""
    from vla_jax.models.vla import VLA, make_config

    if backend not in BACKEND_ATOL:
        raise OpenpiError(f"backend {backend!r} is not one of {', '.join(BACKEND_ATOL)}")
    fixture = Fixture.load(path)
    variables = to_vla_jax(fixture.params)
    config = fixture.config()
    check_against(variables, abstract_variables(config.model))
    cfg = make_config(config.model)
    batch = fixture.batch()
    if backend == "jax":
        ours = model_outputs(VLA(cfg), jax.tree.map(jnp.asarray, variables), batch, fixture)
    else:
        from vla_jax.export import parity, to_torch

        ours = parity.fixture_outputs(to_torch.torch_policy(variables, cfg), batch, fixture, backend)
    return compare(ours, fixture, BACKEND_ATOL[backend])
