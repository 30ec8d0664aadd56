"""Parameter counts per component, from ``jax.eval_shape`` (no memory) and from a closed-form formula."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vla_jax.batch import BATCH_KEYS, dims_from_config
from vla_jax.models import addons
from vla_jax.models.action_expert import ACTION_EXPERTS
from vla_jax.models.vla import VLA, VLAConfig

COMPONENTS = ("vision encoder", "vision projection", "token embedding", "backbone layers", "action expert layers",
              "action/state projections", "add-ons")


def dummy_batch(cfg: VLAConfig, batch_size: int = 1) -> dict[str, jax.ShapeDtypeStruct]:
    """Shape-only batch in the batch.py format, for ``eval_shape`` / init / AOT lowering."""
    dims = dims_from_config(cfg, batch_size)
    return {k: jax.ShapeDtypeStruct(tuple(dims[n] for n in names), jnp.dtype(dt))
            for k, (dt, names) in BATCH_KEYS.items()}


def param_shapes(cfg: VLAConfig):
    """The parameter tree as ShapeDtypeStructs (boxed with logical names), costing no memory."""
    model = VLA(cfg)
    key = jax.random.key(0)
    return jax.eval_shape(lambda b: model.init(key, b, key, method=VLA.compute_loss), dummy_batch(cfg))


def component_of(path: tuple[str, ...]) -> str:
    """Maps a parameter path (names) to one of COMPONENTS."""
    top = path[1]
    if top in addons.REGISTRY:
        return "add-ons"
    if top == "img":
        return "vision encoder"
    if top == "img_proj":
        return "vision projection"
    if top == "llm":
        if path[2] == "embedding":
            return "token embedding"
        return "action expert layers" if any(p.endswith("_1") for p in path[2:]) else "backbone layers"
    return "action/state projections"


def count_by_component(params) -> dict[str, int]:
    """{component: number of parameters} for a (possibly abstract, possibly boxed) parameter tree."""
    counts = dict.fromkeys(COMPONENTS, 0)
    leaves = jax.tree_util.tree_leaves_with_path(params, is_leaf=lambda x: hasattr(x, "names"))
    for path, leaf in leaves:
        value = getattr(leaf, "value", leaf)
        names = tuple(getattr(k, "key", getattr(k, "name", str(k))) for k in path)
        counts[component_of(names)] += int(np.prod(value.shape))
    return counts


def analytic_counts(cfg: VLAConfig) -> dict[str, int]:
    """The same breakdown from the architecture formula (what the published sizes are derived from; the
    add-ons are counted as 0)."""
    v, d = cfg.vit, cfg.decoder
    w, f = v.width, v.mlp_dim
    vit_block = 4 * w + (3 * w * w + 3 * w) + (w * w + w) + (w * f + f) + (f * w + w)
    vision = v.pixel_patch**2 * v.pixel_channels * w + w + v.num_patches * w + v.depth * vit_block + 2 * w
    qkv_out = lambda e: e.width * d.num_heads * d.head_dim * 2 + 2 * e.width * d.num_kv_heads * d.head_dim
    norm = lambda e: 3 * e.width * e.width + 3 * e.width if e.adaptive_norm else e.width  # one RMSNorm
    layer = lambda e: 2 * norm(e) + qkv_out(e) + 3 * e.width * e.mlp_dim
    backbone = d.experts[0]
    out = dict.fromkeys(COMPONENTS, 0)
    out["vision encoder"] = vision
    out["vision projection"] = w * backbone.width + backbone.width
    out["token embedding"] = d.vocab_size * backbone.width
    out["backbone layers"] = d.depth * layer(backbone) + norm(backbone)
    s, a = cfg.max_state_dim, cfg.max_action_dim
    if cfg.action_head == "flow":
        e = d.experts[1]
        out["action expert layers"] = d.depth * layer(e) + norm(e)
        ew, state_token = e.width, ACTION_EXPERTS[cfg.action_expert].STATE_TOKEN
        time_in = (2 if state_token else 1) * ew * ew + ew  # pi0 mixes [action, time]; pi0.5 embeds time alone
        out["action/state projections"] = ((s * ew + ew) * state_token + (a * ew + ew) + time_in + (ew * ew + ew)
                                           + (ew * a + a))
    else:
        out["action/state projections"] = s * backbone.width + backbone.width
    return out


def summary_table(cfg: VLAConfig) -> tuple[str, int, int]:
    """A printable table of per-component counts; returns (table, eval_shape total, analytic total)."""
    measured = count_by_component(param_shapes(cfg))
    derived = analytic_counts(cfg)
    rows = [f"{'component':<26}{'params (eval_shape)':>22}{'params (formula)':>20}{'share':>8}"]
    total_m, total_d = sum(measured.values()), sum(derived.values())
    for name in COMPONENTS:
        rows.append(f"{name:<26}{measured[name]:>22,}{derived[name]:>20,}{measured[name] / total_m:>8.1%}")
    rows.append(f"{'total':<26}{total_m:>22,}{total_d:>20,}{1:>8.0%}")
    return "\n".join(rows), total_m, total_d
