"""LeRobot pi0 / pi0.5 (``PI0Policy`` / ``PI05Policy``, LeRobot 0.4.4) <-> vla_jax: state_dict names and layouts,
the pretrained folder LeRobot's ``from_pretrained`` reads, export and import.

LeRobot's pi0 and pi0.5 are openpi's PyTorch port (HF PaliGemma + a Gemma action expert); the ``pi0`` and ``pi05``
cores (flow head, ``openpi_semantics``, scanned layers, no add-ons) map onto their ``state_dict`` one-to-one.
``P.`` stands for ``model.paligemma_with_expert.``, ``DEC_0`` for ``P.paligemma.model.language_model.``, ``DEC_1`` for
``P.gemma_expert.model.``, ``VIS`` for ``P.paligemma.model.vision_tower.vision_model.``; ``{i}`` is a layer index
(vla_jax stacks layers on a leading axis L, LeRobot writes one key set per layer). D = width, H / N / K = heads /
query heads / key-value heads, h = head dim, F = MLP size, V = vocabulary, p = patch, T = image tokens, e = 0
backbone / 1 action expert. Linear weights are PyTorch's ``[out, in]``:

==================================  ===========================================================  ===================
vla_jax                             LeRobot                                                      layout
==================================  ===========================================================  ===================
img/embedding/w [p, p, 3, D], b     VIS embeddings.patch_embedding.{weight [D, 3, p, p], bias}   Conv2d transpose
img/pos_embedding [1, T, D]         VIS embeddings.position_embedding.weight [T, D]              axis 0 dropped
img/blocks/ln_{attn,mlp}/..         VIS encoder.layers.{i}.layer_norm{1,2}.{weight,bias}         -
img/blocks/qkv/w [L, D, 3, H, h]    VIS encoder.layers.{i}.self_attn.{q,k,v}_proj.weight [Hh, D]  split, reshape, T
img/blocks/qkv/b [L, 3, H, h]       VIS encoder.layers.{i}.self_attn.{q,k,v}_proj.bias [Hh]       split, reshape
img/blocks/out/w [L, H, h, D], b    VIS encoder.layers.{i}.self_attn.out_proj.{weight [D, Hh], ..  reshape, T
img/blocks/mlp_{in,out}/{w,b}       VIS encoder.layers.{i}.mlp.fc{1,2}.{weight,bias}             T
img/ln_final/{scale,bias}           VIS post_layernorm.{weight,bias}                             -
img_proj/{w,b}                      P.paligemma.model.multi_modal_projector.linear.{weight,bias} T
llm/embedding [V, D]                DEC_0 embed_tokens.weight and P.paligemma.lm_head.weight     tied: both written
llm/layers/q_e/w [L, D, N, h]       DEC_e layers.{i}.self_attn.q_proj.weight [Nh, D]             reshape, T
llm/layers/kv_e/w [L, 2, D, K, h]   DEC_e layers.{i}.self_attn.{k,v}_proj.weight [Kh, D]         split, reshape, T
llm/layers/attn_out_e/w [L, N, h, D]  DEC_e layers.{i}.self_attn.o_proj.weight [D, Nh]           reshape, T
llm/layers/gating_e/w [L, 2, D, F]  DEC_e layers.{i}.mlp.{gate,up}_proj.weight [F, D]            split, T
llm/layers/mlp_out_e/w [L, F, D]    DEC_e layers.{i}.mlp.down_proj.weight [D, F]                 T
llm/layers/pre_attn_norm_e/scale    DEC_e layers.{i}.input_layernorm.weight                      - (both: 1 + w)
llm/layers/pre_mlp_norm_e/scale     DEC_e layers.{i}.post_attention_layernorm.weight             -
llm/final_norm_e/scale              DEC_e norm.weight                                            -
{state,action_in,action_out}_proj   model.{state,action_in,action_out}_proj.{weight,bias}        T
time_mlp_{in,out}/{w,b}             model.action_time_mlp_{in,out}.{weight,bias}                 T
(none)                              P.gemma_expert.lm_head.weight [V, D_1]                       zeros (unused)
==================================  ===========================================================  ===================

pi0.5 (``VARIANTS["pi05"]``, LeRobot's ``PI05Policy`` key names): no ``state_proj``; ``time_mlp_{in,out}`` keep their
name (``model.time_mlp_{in,out}``); the expert's norms are adaptive, ``llm/layers/pre_{attn,mlp}_norm_1/modulation/
{w [L, D, 3D], b}`` and ``llm/final_norm_1/modulation/{w,b}`` <-> ``DEC_1 layers.{i}.{input,post_attention}_layernorm.
dense.{weight [3D, D], bias}`` and ``DEC_1 norm.dense.{weight,bias}`` (T), with no norm ``weight``.

Every conversion is a pure re-layout (transpose / reshape / split / stack), so both directions are exact in float32.
Loading, LeRobot adds a missing ``model.`` prefix and applies its policy's fixes to unprefixed keys (pi0: renames
``time_mlp_*`` to ``action_time_mlp_*``; pi0.5: renames ``action_time_mlp_*`` to ``time_mlp_*``, drops ``state_proj.*``
and the expert's norm ``weight``), copies ``P.paligemma.lm_head.weight`` onto the tied ``embed_tokens``, loads
strictly, but only prints a load error: the exporter therefore writes every key, the unused expert ``lm_head``
included, and checks the file.

The folder of each policy type (:data:`VARIANTS`): ``config.json`` (the type's config fields in LeRobot's order),
``policy_preprocessor.json`` (pi0: rename, to-batch, newline, tokenizer, device, normalizer; pi0.5: rename,
to-batch, normalizer, state-into-prompt, tokenizer, device), ``policy_postprocessor.json`` (unnormalizer, device)
and the (un)normalizer state files: pi0 normalizes state and action MEAN_STD (vla_jax's ``normal``), pi0.5
QUANTILES (vla_jax's ``bounds_q99``, q01 / q99).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vla_jax.interop import openpi

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
NORMALIZER, UNNORMALIZER = "normalizer_processor", "unnormalizer_processor"
STATS_EPS = 1e-8  # LeRobot's MEAN_STD: (x - mean) / (std + eps), eps 1e-8 as vla_jax's
DTYPES = ("float32", "bfloat16")
MAX_STATE_DIM = 32  # PI0Config / PI05Config default
VIT_HEADS = 16  # LeRobot keeps HF SigLIP's default head count (So400m); not in the weights
# paligemma_variant / action_expert_variant -> width, depth, mlp_dim, num_heads, num_kv_heads, head_dim
GEMMA_VARIANTS = {
    "gemma_2b": (2048, 18, 16384, 8, 1, 256),  # LeRobot's get_gemma_config
    "gemma_300m": (1024, 18, 4096, 8, 1, 256),
    "dummy": (64, 4, 128, 8, 1, 16),  # openpi's test size (the fixtures'); LeRobot does not accept it
}
HEAD_KEYS = ("vit.num_heads", "llm.num_heads", "llm.num_kv_heads", "llm.head_dim")  # not in the weights' shapes
META_PREFIX = "vla_jax."  # model.safetensors metadata: the HEAD_KEYS of the exported run

P = "model.paligemma_with_expert."
VIS = P + "paligemma.model.vision_tower.vision_model."
ENC = VIS + "encoder.layers.{i}."
DEC = (P + "paligemma.model.language_model.", P + "gemma_expert.model.")
EMBED, LM_HEAD = DEC[0] + "embed_tokens.weight", P + "paligemma.lm_head.weight"
EXPERT_LM_HEAD = P + "gemma_expert.lm_head.weight"
STATE_PROJ = "model.state_proj.weight"  # pi0 only: [max_state_dim -> D_1]
# substrings of the keys LeRobot keeps in float32 when its dtype is bfloat16 (besides everything outside P)
FLOAT32_KEYS = ("embeddings.patch_embedding.", "embeddings.position_embedding.", "input_layernorm.",
                "post_attention_layernorm.", "model.norm.")


class LerobotError(ValueError):
    """A LeRobot folder, state_dict or vla_jax run that does not convert; one line naming what is wrong."""


# ----------------------------------------------------------------------------------------- layouts
def _xp(x):
    return np if isinstance(x, np.ndarray) else jnp


@dataclasses.dataclass(frozen=True)
class Layout:
    """A pure re-layout: ``to`` maps one vla_jax array (one layer of it for per-layer keys) to a tuple of LeRobot
    arrays; ``back`` maps that tuple and the vla_jax array's shape back. numpy or jax arrays (``eval_shape``)."""

    to: Callable[..., tuple]
    back: Callable[[tuple, tuple], object]


SAME = Layout(lambda x: (x,), lambda a, shape: a[0])
LINEAR = Layout(lambda x: (x.T,), lambda a, shape: a[0].T)  # [in, out] <-> [out, in]
CONV = Layout(lambda x: (_xp(x).transpose(x, (3, 2, 0, 1)),),  # [p, p, C, D] <-> [D, C, p, p]
              lambda a, shape: _xp(a[0]).transpose(a[0], (2, 3, 1, 0)))
POSEMB = Layout(lambda x: (x[0],), lambda a, shape: a[0][None])  # [1, T, D] <-> [T, D]
FLAT = Layout(lambda x: (x.reshape(-1),), lambda a, shape: a[0].reshape(shape))  # [H, h] <-> [Hh]
HEADS_IN = Layout(lambda x: (x.reshape(x.shape[0], -1).T,),  # [D, N, h] <-> [Nh, D]
                  lambda a, shape: a[0].T.reshape(shape))
HEADS_OUT = Layout(lambda x: (x.reshape(-1, x.shape[-1]).T,),  # [N, h, D] <-> [D, Nh]
                   lambda a, shape: a[0].T.reshape(shape))
TIED = Layout(lambda x: (x, _xp(x).copy(x)), lambda a, shape: a[0])  # one array written under two keys


def split(axis: int, parts: int, inner: Layout) -> Layout:
    """``parts`` LeRobot arrays from the slices of ``axis`` (each re-laid by ``inner``), stacked back on ``axis``."""
    def to(x):
        return tuple(inner.to(x[(slice(None),) * axis + (j,)])[0] for j in range(parts))

    def back(a, shape):
        part = shape[:axis] + shape[axis + 1:]
        return _xp(a[0]).stack([inner.back((b,), part) for b in a], axis=axis)

    return Layout(to, back)


# ----------------------------------------------------------------------------------------- rules
@dataclasses.dataclass(frozen=True)
class Rule:
    """vla_jax name -> LeRobot keys. Keys with ``{i}`` are per layer: the vla_jax array has a leading layer axis
    and ``layout`` applies to each layer."""

    ours: str
    theirs: tuple[str, ...]
    layout: Layout

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.theirs[0]


# config.json fields in LeRobot 0.4.4's order: PreTrainedConfig's, then PI0Config's (the pi0 example folder's layout)
_BASE_FIELDS = ("type", "n_obs_steps", "input_features", "output_features", "device", "use_amp", "use_peft",
                "push_to_hub", "repo_id", "private", "tags", "license", "pretrained_path")
_PI0_FIELDS = _BASE_FIELDS + (
    "paligemma_variant", "action_expert_variant", "dtype", "chunk_size", "n_action_steps", "max_state_dim",
    "max_action_dim", "num_inference_steps", "time_sampling_beta_alpha", "time_sampling_beta_beta",
    "time_sampling_scale", "time_sampling_offset", "min_period", "max_period", "rtc_config", "image_resolution",
    "empty_cameras", "normalization_mapping", "gradient_checkpointing", "compile_model", "compile_mode",
    "freeze_vision_encoder", "train_expert_only", "optimizer_lr", "optimizer_betas", "optimizer_eps",
    "optimizer_weight_decay", "optimizer_grad_clip_norm", "scheduler_warmup_steps", "scheduler_decay_steps",
    "scheduler_decay_lr", "tokenizer_max_length")
# PI05Config declares tokenizer_max_length first after empty_cameras (its second declaration keeps that place)
_AFTER_CAMERAS = _PI0_FIELDS.index("empty_cameras") + 1
_PI05_FIELDS = _PI0_FIELDS[:_AFTER_CAMERAS] + ("tokenizer_max_length",) + _PI0_FIELDS[_AFTER_CAMERAS:-1]
# PI05Policy's load drops the expert's norm weights (adaptive norms have none), as unprefixed keys
_EXPERT_NORM_WEIGHT = (r"paligemma_with_expert\.gemma_expert\.model\."
                       r"(layers\.\d+\.(input|post_attention)_layernorm|norm)\.weight$")


@dataclasses.dataclass(frozen=True)
class Variant:
    """What differs between LeRobot's pi0 and pi0.5 (``config.json`` ``"type"``): the state_dict (projections
    around the action expert as (vla_jax name, LeRobot name under ``model.``), the expert's norm parameters as
    (vla_jax leaf, LeRobot leaf, layout), LeRobot's load-time fixes of unprefixed keys), the vla_jax preset, the
    normalization, the prompt length default, the preprocessor steps and the config fields."""

    projections: tuple[tuple[str, str], ...]
    expert_norm: tuple[tuple[str, str, Layout], ...]
    renames: tuple[tuple[str, str], ...]  # unprefixed keys renamed on load (old prefix, new)
    drops: tuple[str, ...]  # regexes of unprefixed keys dropped on load
    preset: str  # configs/pretrain.py preset computing it
    norm_mode: str  # LeRobot's normalization_mapping of STATE and ACTION
    norm_method: str  # vla_jax's method (vla_jax/data/norm_stats.py) computing the same
    stats: tuple[str, ...]  # statistics the (un)normalizer state files carry per quantity
    tokenizer_max_length: int  # LeRobot's default
    pre_steps: tuple[str, ...]  # policy_preprocessor.json registry names, in order
    config_fields: tuple[str, ...]  # config.json, in order


_SCALE_NORM = (("scale", "weight", SAME),)
VARIANTS = {
    "pi0": Variant(
        projections=(("state_proj", "state_proj"), ("action_in_proj", "action_in_proj"),
                     ("action_out_proj", "action_out_proj"), ("time_mlp_in", "action_time_mlp_in"),
                     ("time_mlp_out", "action_time_mlp_out")),
        expert_norm=_SCALE_NORM,
        renames=(("time_mlp_in.", "action_time_mlp_in."), ("time_mlp_out.", "action_time_mlp_out.")), drops=(),
        preset="pi0", norm_mode="MEAN_STD", norm_method="normal", stats=("mean", "std"), tokenizer_max_length=48,
        pre_steps=("rename_observations_processor", "to_batch_processor", "pi0_new_line_processor",
                   "tokenizer_processor", "device_processor", NORMALIZER),
        config_fields=_PI0_FIELDS),
    "pi05": Variant(
        projections=(("action_in_proj", "action_in_proj"), ("action_out_proj", "action_out_proj"),
                     ("time_mlp_in", "time_mlp_in"), ("time_mlp_out", "time_mlp_out")),
        expert_norm=(("modulation/w", "dense.weight", LINEAR), ("modulation/b", "dense.bias", SAME)),
        renames=(("action_time_mlp_in.", "time_mlp_in."), ("action_time_mlp_out.", "time_mlp_out.")),
        drops=(r"state_proj\.", _EXPERT_NORM_WEIGHT),
        preset="pi05", norm_mode="QUANTILES", norm_method="bounds_q99", stats=("mean", "std", "q01", "q99"),
        tokenizer_max_length=200,
        pre_steps=("rename_observations_processor", "to_batch_processor", NORMALIZER,
                   "pi05_prepare_state_tokenizer_processor_step", "tokenizer_processor", "device_processor"),
        config_fields=_PI05_FIELDS),
}


def _vision_rules() -> list[Rule]:
    rules = [Rule("img/embedding/w", (VIS + "embeddings.patch_embedding.weight",), CONV),
             Rule("img/embedding/b", (VIS + "embeddings.patch_embedding.bias",), SAME),
             Rule("img/pos_embedding", (VIS + "embeddings.position_embedding.weight",), POSEMB),
             Rule("img/blocks/qkv/w", tuple(f"{ENC}self_attn.{n}_proj.weight" for n in "qkv"), split(1, 3, HEADS_IN)),
             Rule("img/blocks/qkv/b", tuple(f"{ENC}self_attn.{n}_proj.bias" for n in "qkv"), split(0, 3, FLAT)),
             Rule("img/blocks/out/w", (ENC + "self_attn.out_proj.weight",), HEADS_OUT),
             Rule("img/blocks/out/b", (ENC + "self_attn.out_proj.bias",), SAME),
             Rule("img/ln_final/scale", (VIS + "post_layernorm.weight",), SAME),
             Rule("img/ln_final/bias", (VIS + "post_layernorm.bias",), SAME),
             Rule("img_proj/w", (P + "paligemma.model.multi_modal_projector.linear.weight",), LINEAR),
             Rule("img_proj/b", (P + "paligemma.model.multi_modal_projector.linear.bias",), SAME)]
    for ours, theirs in (("ln_attn", "layer_norm1"), ("ln_mlp", "layer_norm2")):
        rules += [Rule(f"img/blocks/{ours}/scale", (f"{ENC}{theirs}.weight",), SAME),
                  Rule(f"img/blocks/{ours}/bias", (f"{ENC}{theirs}.bias",), SAME)]
    for ours, theirs in (("mlp_in", "fc1"), ("mlp_out", "fc2")):
        rules += [Rule(f"img/blocks/{ours}/w", (f"{ENC}mlp.{theirs}.weight",), LINEAR),
                  Rule(f"img/blocks/{ours}/b", (f"{ENC}mlp.{theirs}.bias",), SAME)]
    return rules


def _decoder_rules(e: int, norm: tuple[tuple[str, str, Layout], ...]) -> list[Rule]:
    layer = DEC[e] + "layers.{i}."
    rules = [Rule(f"llm/layers/q_{e}/w", (layer + "self_attn.q_proj.weight",), HEADS_IN),
             Rule(f"llm/layers/kv_{e}/w", (layer + "self_attn.k_proj.weight", layer + "self_attn.v_proj.weight"),
                  split(0, 2, HEADS_IN)),
             Rule(f"llm/layers/attn_out_{e}/w", (layer + "self_attn.o_proj.weight",), HEADS_OUT),
             Rule(f"llm/layers/gating_{e}/w", (layer + "mlp.gate_proj.weight", layer + "mlp.up_proj.weight"),
                  split(0, 2, LINEAR)),
             Rule(f"llm/layers/mlp_out_{e}/w", (layer + "mlp.down_proj.weight",), LINEAR)]
    for ours_leaf, theirs_leaf, layout in norm:
        rules += [Rule(f"llm/layers/pre_attn_norm_{e}/{ours_leaf}", (f"{layer}input_layernorm.{theirs_leaf}",), layout),
                  Rule(f"llm/layers/pre_mlp_norm_{e}/{ours_leaf}",
                       (f"{layer}post_attention_layernorm.{theirs_leaf}",), layout),
                  Rule(f"llm/final_norm_{e}/{ours_leaf}", (f"{DEC[e]}norm.{theirs_leaf}",), layout)]
    return rules


def rules(variant: str = "pi0") -> tuple[Rule, ...]:
    """The name / layout table of a LeRobot policy type (``VARIANTS``)."""
    v = VARIANTS[variant]
    table = _vision_rules() + [Rule("llm/embedding", (EMBED, LM_HEAD), TIED)]
    table += _decoder_rules(0, _SCALE_NORM) + _decoder_rules(1, v.expert_norm)
    for ours, theirs in v.projections:
        table += [Rule(f"{ours}/w", (f"model.{theirs}.weight",), LINEAR),
                  Rule(f"{ours}/b", (f"model.{theirs}.bias",), SAME)]
    return tuple(table)


# ----------------------------------------------------------------------------------------- conversion
def _flat_params(variables: dict) -> dict:
    return openpi.flatten(variables["params"] if set(variables) == {"params"} else variables)


def _check_names(have: set[str], want: set[str], what: str, other: str) -> None:
    extra = sorted(have - want)
    if extra:
        raise LerobotError(f"{what} {extra[0]} has no {other} counterpart ({len(extra)} left over)")
    missing = sorted(want - have)
    if missing:
        raise LerobotError(f"{what} {missing[0]} is missing ({len(missing)} missing)")


def _to(rule: Rule, x) -> dict:
    if not rule.per_layer:
        return dict(zip(rule.theirs, rule.layout.to(x)))
    out = {}
    for i in range(x.shape[0]):
        out |= dict(zip((t.format(i=i) for t in rule.theirs), rule.layout.to(x[i])))
    return out


def _back(rule: Rule, theirs: dict, shape: tuple[int, ...]):
    if not rule.per_layer:
        return rule.layout.back(tuple(theirs[t] for t in rule.theirs), shape)
    layers = [rule.layout.back(tuple(theirs[t.format(i=i)] for t in rule.theirs), shape[1:]) for i in range(shape[0])]
    return _xp(layers[0]).stack(layers)


def to_lerobot(variables: dict, variant: str = "pi0") -> dict:
    """vla_jax model variables ``{"params": ...}`` -> LeRobot's ``state_dict`` (every key, the expert's unused
    ``lm_head`` as zeros [V, D_1]). LerobotError (one line) for a vla_jax name left over or missing."""
    ours = _flat_params(variables)
    table = rules(variant)
    _check_names(set(ours), {r.ours for r in table}, "vla_jax parameter", f"LeRobot {variant}")
    out = {}
    for rule in table:
        out |= _to(rule, ours[rule.ours])
    vocab, width = ours["llm/embedding"].shape[0], ours["action_in_proj/w"].shape[1]
    out[EXPERT_LM_HEAD] = _xp(ours["llm/embedding"]).zeros((vocab, width), np.float32)
    return out


def from_lerobot(state_dict: dict, shapes: dict[str, tuple[int, ...]], variant: str = "pi0") -> dict:
    """LeRobot's ``state_dict`` (:func:`canonical_keys` applied) -> vla_jax variables ``{"params": ...}`` with the
    ``shapes`` of the target model (flat vla_jax names; head counts are not in LeRobot's shapes). The expert's
    ``lm_head`` is dropped. LerobotError (one line) for a LeRobot key left over or missing."""
    table = rules(variant)
    want = {t.format(i=i) for r in table for i in range(shapes[r.ours][0] if r.per_layer else 1) for t in r.theirs}
    _check_names(set(state_dict) - {EXPERT_LM_HEAD}, want, "LeRobot key", f"vla_jax {variant}")
    return {"params": openpi.unflatten({r.ours: _back(r, state_dict, shapes[r.ours]) for r in table})}


def check_inverse(variables: dict, variant: str = "pi0") -> None:
    """Raises LerobotError (one line) unless every vla_jax array survives LeRobot's layout and back bit for bit
    (one rule at a time, so only one parameter is copied at once)."""
    ours = _flat_params(variables)
    for rule in rules(variant):
        x = ours[rule.ours]
        if not np.array_equal(np.asarray(_back(rule, _to(rule, x), x.shape)), x):
            raise LerobotError(f"vla_jax parameter {rule.ours} does not survive LeRobot's layout and back")


def canonical_keys(state_dict: dict, variant: str = "pi0") -> dict:
    """A state_dict's arrays (or their shapes, to check names before loading) under LeRobot's own load-time key
    fixes for the policy type ``variant`` (:data:`VARIANTS`): unprefixed keys dropped or renamed (pi0:
    ``time_mlp_*`` -> ``action_time_mlp_*``; pi0.5: ``action_time_mlp_*`` -> ``time_mlp_*``, ``state_proj.*`` and the
    expert's norm ``weight`` dropped), the ``model.`` prefix added where missing, the tied PaliGemma ``lm_head`` /
    ``embed_tokens`` completed from each other (LeRobot saves only ``lm_head``). LerobotError (one line) when both
    are present and differ."""
    v = VARIANTS[variant]
    out = {}
    for key, value in state_dict.items():
        if any(re.match(drop, key) for drop in v.drops):
            continue
        for old, new in v.renames:
            if key.startswith(old):
                key = new + key[len(old):]
        out[key if key.startswith("model.") else "model." + key] = value
    if EMBED in out and LM_HEAD in out and not np.array_equal(np.asarray(out[EMBED]), np.asarray(out[LM_HEAD])):
        raise LerobotError(f"{LM_HEAD} differs from {EMBED}; LeRobot ties the two")
    for a, b in ((EMBED, LM_HEAD), (LM_HEAD, EMBED)):
        if a in out and b not in out:
            out[b] = out[a]
    return out


def lerobot_dtype(key: str, dtype: str) -> str:
    """The dtype LeRobot's PI0Policy and PI05Policy give ``key`` for their config ``dtype`` (both
    ``to_bfloat16_for_selected_params``): with bfloat16 the patch / position embeddings, every RMSNorm (pi0.5's
    adaptive ``dense`` included) and everything outside ``paligemma_with_expert`` stay float32."""
    if dtype == "float32" or not key.startswith(P) or any(s in key for s in FLOAT32_KEYS):
        return "float32"
    return "bfloat16"


# ----------------------------------------------------------------------------------------- sizes
def variant_name(width: int, depth: int, mlp_dim: int, heads: int, kv_heads: int, head_dim: int) -> str:
    """The :data:`GEMMA_VARIANTS` name of these sizes, else ``"custom"``."""
    sizes = (width, depth, mlp_dim, heads, kv_heads, head_dim)
    return next((name for name, v in GEMMA_VARIANTS.items() if v == sizes), "custom")


def head_sizes(metadata: dict[str, str] | None, config: dict) -> dict[str, int]:
    """:data:`HEAD_KEYS` of a folder: from ``model.safetensors``' metadata where vla_jax wrote them, else LeRobot's
    fixed values (SigLIP's 16 heads, the Gemma variants' heads of ``config.json``)."""
    meta = {k[len(META_PREFIX):]: int(v) for k, v in (metadata or {}).items() if k.startswith(META_PREFIX)}
    if set(meta) == set(HEAD_KEYS):
        return {k: meta[k] for k in HEAD_KEYS}
    found = {config.get(f) for f in ("paligemma_variant", "action_expert_variant")}
    heads = {GEMMA_VARIANTS[v][3:] for v in found if v in GEMMA_VARIANTS}
    if len(heads) != 1 or not found <= set(GEMMA_VARIANTS):
        raise LerobotError(f"{CONFIG_FILE} names Gemma variants {sorted(map(str, found))}: head sizes unknown (known: "
                           f"{', '.join(GEMMA_VARIANTS)}; vla_jax exports carry theirs in {WEIGHTS_FILE}'s metadata)")
    return dict(zip(HEAD_KEYS, (VIT_HEADS, *heads.pop())))


def _shape(shapes: dict[str, tuple[int, ...]], key: str) -> tuple[int, ...]:
    if key not in shapes:
        raise LerobotError(f"LeRobot key {key} is missing")
    return shapes[key]


def _depth(shapes: dict[str, tuple[int, ...]], key: str) -> int:
    return next(i for i in range(len(shapes) + 1) if key.format(i=i) not in shapes)


def infer_model(shapes: dict[str, tuple[int, ...]], heads: dict[str, int]) -> dict:
    """Model sizes from LeRobot's (canonical) state_dict shapes and :func:`head_sizes`: ``{"a.b": value}``
    config.model overrides of the type's preset. ``max_state_dim`` only where ``state_proj`` holds it (pi0; pi0.5
    writes the state into the prompt)."""
    width, _, patch, _ = _shape(shapes, VIS + "embeddings.patch_embedding.weight")
    tokens = _shape(shapes, VIS + "embeddings.position_embedding.weight")[0]
    vocab, llm_width = _shape(shapes, EMBED)
    expert_width, action_dim = _shape(shapes, "model.action_in_proj.weight")
    return {
        "image_size": math.isqrt(tokens) * patch, "vocab_size": vocab, "max_action_dim": action_dim,
        **({"max_state_dim": shapes[STATE_PROJ][1]} if STATE_PROJ in shapes else {}),
        "vit.width": width, "vit.patch_size": patch, "vit.depth": _depth(shapes, ENC + "layer_norm1.weight"),
        "vit.mlp_dim": _shape(shapes, ENC.format(i=0) + "mlp.fc1.weight")[0],
        "llm.width": llm_width, "llm.depth": _depth(shapes, DEC[0] + "layers.{i}.input_layernorm.weight"),
        "llm.mlp_dim": _shape(shapes, DEC[0] + "layers.0.mlp.gate_proj.weight")[0],
        "expert.width": expert_width, "expert.mlp_dim": _shape(shapes, DEC[1] + "layers.0.mlp.gate_proj.weight")[0],
        **heads,
    }


def run_config(variant: str, sizes: dict, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """The preset of the policy type ``variant`` (configs/pretrain.py ``pi0`` | ``pi05``, ``openpi_semantics=True``)
    with ``sizes`` (:func:`infer_model`, under ``model.``) and ``overrides`` (``{"model.dtype": "float32", ...}``)."""
    from vla_jax.config import load_config

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return load_config(os.path.join(root, "configs", "pretrain.py") + f":size={VARIANTS[variant].preset}",
                       {f"model.{k}": v for k, v in sizes.items()} | (overrides or {}))


def expected_shapes(abstract: dict, variant: str = "pi0") -> dict[str, tuple[int, ...]]:
    """LeRobot key -> shape of the policy type ``variant`` for the vla_jax model whose abstract variables are
    ``abstract``."""
    return {k: tuple(v.shape) for k, v in jax.eval_shape(lambda a: to_lerobot(a, variant), abstract).items()}


def check_shapes(shapes: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]], variant: str = "pi0") -> None:
    """LerobotError (one line) unless the (canonical) state_dict ``shapes`` are ``want``'s (the expert's unused
    ``lm_head`` may be absent)."""
    _check_names(set(shapes), set(want) - ({EXPERT_LM_HEAD} - set(shapes)), "LeRobot key", f"vla_jax {variant}")
    for key, shape in shapes.items():
        if shape != want[key]:
            raise LerobotError(f"LeRobot key {key} has shape {shape}; the model its sizes describe needs {want[key]}")


# ----------------------------------------------------------------------------------------- folder: json
def camera_names(num_cameras: int) -> list[str]:
    """openpi's camera names for vla_jax's slots (primary, left wrist, right wrist), ``camera_<i>`` beyond."""
    return [openpi.CAMERAS[i] if i < len(openpi.CAMERAS) else f"camera_{i}" for i in range(num_cameras)]


def _feature(kind: str, shape: list[int]) -> dict:
    return {"type": kind, "shape": shape}


def policy_config(model: dict, state_dim: int, action_dim: int, dtype: str) -> dict:
    """LeRobot's ``config.json`` for a saved ``config.model`` (``action_expert`` pi0 | pi05 -> PI0Config |
    PI05Config, ``"type"`` and the fields in LeRobot 0.4.4's order, :data:`VARIANTS`): sizes, chunk, dims, cameras,
    prompt length and flow steps from the run, the normalization the type's, the rest LeRobot's defaults."""
    variant = model.get("action_expert", "pi0")
    res, horizon = model["image_size"], model["action_horizon"]
    llm, expert = model["llm"], model["expert"]
    shared = (llm["depth"], llm["num_heads"], llm["num_kv_heads"], llm["head_dim"])
    features = {f"observation.images.{c}": _feature("VISUAL", [3, res, res])
                for c in camera_names(model["num_cameras"])}
    values = {
        "type": variant, "n_obs_steps": 1,
        "input_features": features | {"observation.state": _feature("STATE", [state_dim])},
        "output_features": {"action": _feature("ACTION", [action_dim])},
        "device": "cpu", "use_amp": False, "use_peft": False, "push_to_hub": True, "repo_id": None, "private": None,
        "tags": None, "license": None, "pretrained_path": None,
        "paligemma_variant": variant_name(llm["width"], shared[0], llm["mlp_dim"], *shared[1:]),
        "action_expert_variant": variant_name(expert["width"], shared[0], expert["mlp_dim"], *shared[1:]),
        "dtype": dtype, "chunk_size": horizon, "n_action_steps": horizon,
        "max_state_dim": model["max_state_dim"], "max_action_dim": model["max_action_dim"],
        "num_inference_steps": model["num_flow_steps"],
        "time_sampling_beta_alpha": 1.5, "time_sampling_beta_beta": 1.0, "time_sampling_scale": 0.999,
        "time_sampling_offset": 0.001, "min_period": 0.004, "max_period": 4.0, "rtc_config": None,
        "image_resolution": [res, res], "empty_cameras": 0, "normalization_mapping": norm_map(variant),
        "gradient_checkpointing": False, "compile_model": False, "compile_mode": "max-autotune",
        "freeze_vision_encoder": False, "train_expert_only": False,
        "optimizer_lr": 2.5e-05, "optimizer_betas": [0.9, 0.95], "optimizer_eps": 1e-08,
        "optimizer_weight_decay": 0.01, "optimizer_grad_clip_norm": 1.0,
        "scheduler_warmup_steps": 1000, "scheduler_decay_steps": 30000, "scheduler_decay_lr": 2.5e-06,
        "tokenizer_max_length": model["max_text_len"],
    }
    return {k: values[k] for k in VARIANTS[variant].config_fields}


def norm_map(variant: str) -> dict[str, str]:
    """LeRobot's ``normalization_mapping`` / ``norm_map`` of the policy type: images as they are, state and action
    in the type's mode."""
    mode = VARIANTS[variant].norm_mode
    return {"VISUAL": "IDENTITY", "STATE": mode, "ACTION": mode}


def _stats_file(pipeline: str, index: int, step: str) -> str:
    return f"{pipeline}_step_{index}_{step}.safetensors"


def _normalizer_config(features: dict, config: dict) -> dict:
    return {"eps": STATS_EPS, "features": features, "norm_map": dict(config["normalization_mapping"])}


# processor registry name -> its step config for a config.json (each step's get_config in LeRobot 0.4.4)
STEP_CONFIGS: dict[str, Callable[[dict], dict]] = {
    "rename_observations_processor": lambda c: {"rename_map": {}},
    "to_batch_processor": lambda c: {},
    "pi0_new_line_processor": lambda c: {},
    "pi05_prepare_state_tokenizer_processor_step": lambda c: {},  # its max_state_dim is not saved
    "tokenizer_processor": lambda c: {"max_length": c["tokenizer_max_length"], "task_key": "task",
                                      "padding_side": "right", "padding": "max_length", "truncation": True,
                                      "tokenizer_name": "google/paligemma-3b-pt-224"},
    "device_processor": lambda c: {"device": "cpu", "float_dtype": None},
    NORMALIZER: lambda c: _normalizer_config(c["input_features"] | c["output_features"], c),
}


def processors(config: dict) -> tuple[dict, dict]:
    """LeRobot's ``policy_preprocessor.json`` and ``policy_postprocessor.json`` for a ``config.json``: the type's
    preprocessor steps (:data:`VARIANTS`, configs of :data:`STEP_CONFIGS`), then unnormalizer (action) and
    device; the (un)normalizer's ``state_file`` named after its pipeline and index as LeRobot's save does."""
    pre = [{"registry_name": name, "config": STEP_CONFIGS[name](config)}
           | ({"state_file": _stats_file("policy_preprocessor", i, name)} if name == NORMALIZER else {})
           for i, name in enumerate(VARIANTS[config["type"]].pre_steps)]
    post = [{"registry_name": UNNORMALIZER, "config": _normalizer_config(dict(config["output_features"]), config),
             "state_file": _stats_file("policy_postprocessor", 0, UNNORMALIZER)},
            {"registry_name": "device_processor", "config": STEP_CONFIGS["device_processor"](config)}]
    return {"name": "policy_preprocessor", "steps": pre}, {"name": "policy_postprocessor", "steps": post}


# ----------------------------------------------------------------------------------------- folder: norm stats
QUANTITIES = (("state", "observation.state"), ("action", "action"))  # vla_jax's name, LeRobot's feature


def normalizer_stats(stats: dict, dataset: str, variant: str = "pi0") -> dict[str, np.ndarray]:
    """One robot dataset's entry of vla_jax's checkpoint norm stats -> the (un)normalizer state file's arrays for
    the policy type ``variant``: ``observation.state.<stat>`` and ``action.<stat>`` [dim] float32 for the type's
    statistics (pi0: mean, std; pi0.5: mean, std, q01, q99). pi0 normalizes MEAN_STD, vla_jax's ``normal`` (both
    divide by ``std + 1e-8``, so ``std`` is written as is); pi0.5 QUANTILES, vla_jax's ``bounds_q99`` (both map
    [q01, q99] to [-1, 1]). LerobotError (one line) for a quantity vla_jax normalizes otherwise or not on every
    dim, or a statistic the type needs that is missing."""
    v = VARIANTS[variant]
    out = {}
    for ours, theirs in QUANTITIES:
        block = openpi.check_normalization(stats, dataset, ours, v.norm_method, v.stats,
                                           f"LeRobot's {variant} ({v.norm_mode})", LerobotError)
        for k in v.stats:
            out[f"{theirs}.{k}"] = np.asarray(block[k], np.float32).reshape(-1)
    return out


def read_normalizer(folder: str, variant: str = "pi0") -> dict | None:
    """A folder's ``policy_preprocessor.json`` normalizer step -> vla_jax norm-stats blocks ``{"state": {...},
    "action": {...}}`` (every statistic the state file holds; ``std`` shifted by the step's ``eps - 1e-8`` so
    vla_jax's ``(x - mean) / (std + 1e-8)`` equals LeRobot's); None when the step has no ``state_file`` (LeRobot
    writes one only for non-empty statistics, e.g. not for a base model). LerobotError (one line) when the step is
    missing, normalizes state or action in another mode than the type's, or its file lacks the type's statistics."""
    from safetensors.numpy import load_file

    v = VARIANTS[variant]
    step = _normalizer_step(_read_json(os.path.join(folder, PREPROCESSOR_FILE)))
    modes = step["config"].get("norm_map", {})
    for kind in ("STATE", "ACTION"):
        if modes.get(kind) != v.norm_mode:
            raise LerobotError(f"{PREPROCESSOR_FILE} normalizes {kind} with {modes.get(kind)!r}; the {variant} "
                               f"import reads {v.norm_mode}")
    if "state_file" not in step:
        return None
    path = os.path.join(folder, step["state_file"])
    try:
        arrays = load_file(path)
    except Exception as e:  # noqa: BLE001 - safetensors raises several types; one line
        raise LerobotError(f"{path} cannot be read as safetensors: {_first_line(e)}") from None
    shift = float(step["config"].get("eps", STATS_EPS)) - openpi.VLA_STD_EPS
    out = {}
    for ours, theirs in QUANTITIES:
        block = {k[len(theirs) + 1:]: np.asarray(a, np.float64).reshape(-1).tolist() for k, a in arrays.items()
                 if k.startswith(theirs + ".") and "." not in k[len(theirs) + 1:]}
        missing = [k for k in v.stats if k not in block]
        if missing:
            raise LerobotError(f"{path} lacks {', '.join(f'{theirs}.{k}' for k in missing)}")
        block["std"] = [s + shift for s in block["std"]]
        out[ours] = block
    return out


def _normalizer_step(pipeline: dict) -> dict:
    steps = [s for s in pipeline.get("steps", []) if s.get("registry_name") == NORMALIZER]
    if len(steps) != 1:
        raise LerobotError(f"{PREPROCESSOR_FILE} has {len(steps)} {NORMALIZER} steps, not 1")
    return steps[0]


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise LerobotError(f"{path} does not exist")
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise LerobotError(f"{path} is not JSON: {_first_line(e)}") from None
    if not isinstance(data, dict):
        raise LerobotError(f"{path} holds no JSON object")
    return data


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


# ----------------------------------------------------------------------------------------- folder: write
def is_folder(path: str) -> bool:
    """Whether ``path`` holds a LeRobot policy folder (config.json with a ``type`` and model.safetensors)."""
    try:
        return "type" in _read_json(os.path.join(path, CONFIG_FILE)) and \
            os.path.isfile(os.path.join(path, WEIGHTS_FILE))
    except LerobotError:
        return False


def pick_dataset(norm_stats: dict | None, dataset: str | None) -> tuple[str, dict]:
    """The robot dataset whose statistics the folder carries: ``dataset``, else the only one. LerobotError (one
    line) when it has none, several without ``dataset``, or ``dataset`` is not among them."""
    found = openpi.robot_datasets(norm_stats)
    if dataset is not None:
        if dataset not in found:
            raise LerobotError(f"--dataset={dataset} has no state and action norm stats (robot datasets: "
                               f"{', '.join(found) or 'none'})")
        return dataset, found[dataset]
    if len(found) != 1:
        raise LerobotError(f"the checkpoint has {'several' if found else 'no'} robot datasets with state and "
                           f"action norm stats ({', '.join(found) or 'none'}); LeRobot's folder carries one: pass "
                           "--dataset")
    return next(iter(found.items()))


def write_folder(out: str, variables: dict, model: dict, norm_stats: dict | None, *, dataset: str | None = None,
                 dtype: str = "float32", preset: str | None = None) -> dict:
    """A ``pi0`` or ``pi05`` run's variables + saved ``config.model`` + checkpoint norm stats -> LeRobot's pretrained
    folder of the policy type ``config.model.action_expert`` at ``out`` (a new directory): ``model.safetensors``
    (every key of :func:`to_lerobot`, dtypes of :func:`lerobot_dtype`, metadata ``vla_jax.<HEAD_KEYS>``),
    ``config.json``, ``policy_{pre,post}processor.json`` and their (un)normalizer state files. Verified: the
    conversion inverts bit for bit, the written file lists every key with its shape and dtype. Returns ``{"type",
    "dataset", "num_params", "keys"}``. LerobotError (one line) for a model LeRobot's pi0 / pi0.5 does not compute,
    a dataset it cannot normalize, a bad ``dtype``."""
    if dtype not in DTYPES:
        raise LerobotError(f"--dtype={dtype} must be one of {', '.join(DTYPES)}")
    variant = model.get("action_expert", "pi0")
    if variant not in VARIANTS:
        raise LerobotError(f"config.model.action_expert={variant!r} has no LeRobot policy (LeRobot's: "
                           f"{', '.join(VARIANTS)})")
    try:
        openpi.check_model(model, preset)
    except openpi.OpenpiError as e:
        raise LerobotError(f"not a LeRobot {variant} (openpi's {variant}): {e}") from None
    name, stats = pick_dataset(norm_stats, dataset)
    arrays = normalizer_stats(stats, name, variant)
    variables = {"params": {k: np.asarray(v, np.float32) for k, v in _flat_params(variables).items()}}
    theirs = to_lerobot(variables, variant)
    check_inverse(variables, variant)
    config = policy_config(model, arrays["observation.state.mean"].shape[0], arrays["action.mean"].shape[0], dtype)
    os.makedirs(out)
    heads = {"vit.num_heads": model["vit"]["num_heads"]} | {f"llm.{k}": model["llm"][k] for k in
                                                           ("num_heads", "num_kv_heads", "head_dim")}
    _write_weights(os.path.join(out, WEIGHTS_FILE), theirs, dtype, heads)
    pre, post = processors(config)
    for path, data, indent in ((CONFIG_FILE, config, 4), (PREPROCESSOR_FILE, pre, 2), (POSTPROCESSOR_FILE, post, 2)):
        with open(os.path.join(out, path), "w") as f:
            json.dump(data, f, indent=indent)
    from safetensors.numpy import save_file

    for step in pre["steps"] + post["steps"]:
        if "state_file" in step:
            save_file(arrays, os.path.join(out, step["state_file"]))
    return {"type": variant, "dataset": name, "num_params": int(sum(v.size for v in theirs.values())),
            "keys": len(theirs)}


def _write_weights(path: str, arrays: dict, dtype: str, heads: dict[str, int]) -> None:
    """``model.safetensors`` via torch (bfloat16), then its header checked against ``arrays``' keys and shapes."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    want = {k: (tuple(v.shape), lerobot_dtype(k, dtype)) for k, v in arrays.items()}
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)).to(getattr(torch, want[k][1]))
               for k, v in arrays.items()}
    save_file(tensors, path, metadata={"format": "pt", "source": "vla_jax",
                                       **{META_PREFIX + k: str(v) for k, v in heads.items()}})
    del tensors
    with safe_open(path, framework="pt") as f:
        written = {k: (tuple(f.get_slice(k).get_shape()), _DTYPE_NAMES.get(f.get_slice(k).get_dtype()))
                   for k in f.keys()}
    if written != want:
        key = next(k for k in sorted(set(written) | set(want)) if written.get(k) != want.get(k))
        raise LerobotError(f"{path}: {key} is written as {written.get(key)}, not {want.get(key)}")


_DTYPE_NAMES = {"F32": "float32", "BF16": "bfloat16"}


# ----------------------------------------------------------------------------------------- folder: read
def read_weights(folder: str) -> tuple[dict[str, tuple[int, ...]], dict[str, str], Callable[[], dict]]:
    """``model.safetensors`` -> (key -> shape, metadata, a function loading every array as float32 numpy)."""
    from safetensors import safe_open

    path = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.isfile(path):
        raise LerobotError(f"{folder} is not a LeRobot policy folder (no {WEIGHTS_FILE})")
    try:
        with safe_open(path, framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            metadata = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types; one line
        raise LerobotError(f"{path} cannot be read as safetensors: {_first_line(e)}") from None

    def load() -> dict:
        with safe_open(path, framework="pt") as f:
            return {k: f.get_tensor(k).float().numpy() for k in f.keys()}

    return shapes, metadata, load


@dataclasses.dataclass
class ImportReport:
    folder: str
    out: str
    variant: str  # LeRobot's policy type
    num_params: int
    sizes: dict
    norm_stats: str  # one line

    def format(self) -> str:
        table = rules(self.variant)
        lines = [f"[import_lerobot] {self.folder} -> {self.out}: {len(table)} vla_jax parameters from LeRobot's "
                 f"{self.variant} state_dict ({self.num_params:,} values), none left over",
                 "  sizes: " + ", ".join(f"{k}={v}" for k, v in self.sizes.items()),
                 f"  norm stats: {self.norm_stats}"]
        lines += [f"  {r.ours}  <-  {' + '.join(r.theirs)}" for r in table]
        return "\n".join(lines)


def folder_overrides(config: dict, sizes: dict) -> dict:
    """config.model overrides read from LeRobot's ``config.json`` (chunk, prompt length, cameras, flow steps, max
    state dim), defaults LeRobot's for its ``type``; LerobotError (one line) where it disagrees with the weights
    (image resolution, max dims the weights hold)."""
    v = VARIANTS[config["type"]]
    res = config.get("image_resolution") or [sizes["image_size"]] * 2
    state_dim = int(config.get("max_state_dim", sizes.get("max_state_dim", MAX_STATE_DIM)))
    checks = (("image_resolution", list(res), [sizes["image_size"]] * 2),
              ("max_state_dim", state_dim, sizes.get("max_state_dim", state_dim)),
              ("max_action_dim", config.get("max_action_dim", sizes["max_action_dim"]), sizes["max_action_dim"]))
    for field, have, want in checks:
        if have != want:
            raise LerobotError(f"{CONFIG_FILE} {field}={have} disagrees with the weights ({want})")
    cameras = [k for k, f in (config.get("input_features") or {}).items() if (f or {}).get("type") == "VISUAL"]
    cameras += [f"empty_camera_{i}" for i in range(int(config.get("empty_cameras", 0)))]
    if not cameras:
        raise LerobotError(f"{CONFIG_FILE} has no VISUAL input feature (LeRobot's {config['type']} needs a camera)")
    return {"model.action_horizon": int(config.get("chunk_size", 50)),
            "model.max_text_len": int(config.get("tokenizer_max_length", v.tokenizer_max_length)),
            "model.num_cameras": len(cameras), "model.num_flow_steps": int(config.get("num_inference_steps", 10)),
            "model.max_state_dim": state_dim}


def import_folder(folder: str, out: str, dataset: str = "lerobot", overrides: dict | None = None) -> ImportReport:
    """LeRobot pi0 / pi0.5 folder -> a vla_jax params-only run at ``out`` (step 0, ``write_checkpoint``): the
    ``pi0`` / ``pi05`` preset (``config.json``'s ``type``) at the weights' sizes, chunk / prompt length / cameras /
    flow steps / max state dim from ``config.json``, ``overrides`` on top, the normalizer's statistics under
    ``dataset`` with the type's normalization (none when the normalizer carries none). LerobotError (one line) for
    anything that is not a LeRobot pi0 / pi0.5 folder or does not map."""
    from vla_jax.train import checkpoint as ckpt_lib

    if not os.path.isdir(folder):
        raise LerobotError(f"{folder} is not a directory")
    config = _read_json(os.path.join(folder, CONFIG_FILE))
    variant = config.get("type")
    if variant not in VARIANTS:
        raise LerobotError(f"{folder}/{CONFIG_FILE} has type {variant!r}; only LeRobot's "
                           f"{' and '.join(VARIANTS)} import")
    if os.path.isdir(os.path.join(out, "checkpoints")) and ckpt_lib.available_steps(out):
        raise LerobotError(f"--out={out} already has checkpoints; choose a new run directory")
    shapes, metadata, load = read_weights(folder)
    shapes = canonical_keys(shapes, variant)
    sizes = infer_model(shapes, head_sizes(metadata, config))
    config_out = run_config(variant, sizes, folder_overrides(config, sizes) | (overrides or {}))
    abstract = openpi.abstract_variables(config_out.model)
    check_shapes(shapes, expected_shapes(abstract, variant), variant)
    blocks = read_normalizer(folder, variant)
    variables = from_lerobot(canonical_keys(load(), variant),
                             {k: tuple(v.shape) for k, v in openpi.flatten(abstract["params"]).items()}, variant)
    method = VARIANTS[variant].norm_method
    stats, note = None, f"none ({PREPROCESSOR_FILE}'s normalizer carries no statistics)"
    if blocks is not None:
        stats = {dataset: {"dataset": dataset, "source": f"LeRobot {PREPROCESSOR_FILE}",
                           "action_normalization": method, "state_normalization": method, **blocks,
                           "state_dim": len(blocks["state"]["mean"]), "action_dim": len(blocks["action"]["mean"])}}
        note = (f"{PREPROCESSOR_FILE} normalizer -> dataset '{dataset}' (state {stats[dataset]['state_dim']}-D, "
                f"action {stats[dataset]['action_dim']}-D, {method})")
    ckpt_lib.write_checkpoint(out, variables, config_out, stats)
    return ImportReport(folder=folder, out=out, variant=variant, sizes=sizes, norm_stats=note,
                        num_params=int(sum(v.size for v in openpi.flatten(variables["params"]).values())))
