"""Gemma-style decoder where several "experts" (token groups with their own weights) share attention.

This is pi0's mixture of transformers: expert 0 is the VLM backbone (image + text tokens),
expert 1 is the action expert (state + action tokens). In every layer each expert projects its
own tokens to queries/keys/values with its own weights; one attention runs over the
concatenation of all experts' tokens; each expert then applies its own output projection and
GeGLU MLP. An expert whose input is ``None`` is skipped, which is how the prefix is run alone
(to fill the KV cache) and how the suffix is run against that cache. An expert with ``adaptive_norm``
(pi0.5's action expert) replaces its RMSNorms by :class:`AdaptiveRMSNorm` driven by a conditioning vector
(the flow time) and gates its residuals with it.

Shapes: B batch, T new tokens (all experts, concatenated in order), S cached tokens,
N query heads, K key/value heads (N % K == 0, MQA when K == 1), h head dim, D_i expert width.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vla_jax.models.layers import AdaptiveRMSNorm, Einsum, RMSNorm, constrain, maybe_remat

KVCache = tuple[jax.Array, jax.Array]  # keys, values: [layers, B, S, K, h]


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    width: int
    mlp_dim: int
    adaptive_norm: bool = False  # RMSNorms conditioned on the decoder's ``cond`` (pi0.5's action expert)


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    experts: tuple[ExpertConfig, ...]
    depth: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    dtype: str = "float32"
    remat: str = "none"
    scan: bool = True


def rope(x: jax.Array, positions: jax.Array, max_wavelength: float = 10_000.0) -> jax.Array:
    """Rotary position embedding. x: [B, T, n, h], positions: [B, T] int."""
    half = x.shape[-1] // 2
    freq = max_wavelength ** (2.0 * jnp.arange(half, dtype=jnp.float32) / x.shape[-1])
    angle = positions[..., None, None].astype(jnp.float32) / freq  # [B, T, 1, h/2]
    sin, cos = jnp.sin(angle), jnp.cos(angle)
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def make_norm(ecfg: ExpertConfig, name: str) -> nn.Module:
    """An expert's RMSNorm module: adaptive (pi0.5's action expert) or plain."""
    return AdaptiveRMSNorm(name=name) if ecfg.adaptive_norm else RMSNorm(name=name)


def run_norm(norm: nn.Module, x: jax.Array, cond: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """(normed x, residual gate [B, 1, D] of an adaptive norm, else None)."""
    if not isinstance(norm, AdaptiveRMSNorm):
        return norm(x), None
    if cond is None:
        raise ValueError("an adaptive-norm expert runs only with the decoder's cond (the flow time)")
    return norm(x, cond)


def residual(x: jax.Array, y: jax.Array, gate: jax.Array | None) -> jax.Array:
    """``x + y``, or ``x + y * gate`` after an adaptive norm."""
    return x + y if gate is None else x + y * gate


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Grouped-query attention with float32 logits.

    q: [B, T, N, h]; k, v: [B, S, K, h]; mask: [B, T, S] bool (True = may attend). Returns [B, T, N, h].
    """
    b, t, n, h = q.shape
    kh = k.shape[2]
    q = q.reshape(b, t, kh, n // kh, h)
    logits = jnp.einsum("btkgh,bskh->bkgts", q, k, preferred_element_type=jnp.float32) * h**-0.5
    big_neg = jnp.finfo(jnp.float32).min
    logits = jnp.where(mask[:, None, None, :, :], logits, big_neg)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskh->btkgh", probs, v)
    return out.reshape(b, t, n, h)


class Block(nn.Module):
    """One decoder layer over all experts. Returns the updated token streams and this layer's new K/V."""

    cfg: DecoderConfig

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array | None], positions: jax.Array, mask: jax.Array,
                 kv_cache: KVCache | None, cond: jax.Array | None) -> tuple[list[jax.Array | None], KVCache]:
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        n, kh, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        qs, ks, vs, gates = [], [], [], []
        for i, (x, ecfg) in enumerate(zip(xs, cfg.experts)):
            if x is None:
                gates.append(None)
                continue
            y, res_gate = run_norm(make_norm(ecfg, f"pre_attn_norm_{i}"), x, cond)
            gates.append(res_gate)
            qs.append(Einsum((ecfg.width, n, h), ("embed", "heads", "head_dim"), dtype=dtype,
                             name=f"q_{i}")("btd,dnh->btnh", y))
            kv = Einsum((2, ecfg.width, kh, h), (None, "embed", "kv_heads", "head_dim"), dtype=dtype,
                        name=f"kv_{i}")("btd,cdkh->cbtkh", y)
            ks.append(kv[0])
            vs.append(kv[1])
        q = rope(jnp.concatenate(qs, axis=1), positions)
        k = rope(jnp.concatenate(ks, axis=1), positions)
        v = jnp.concatenate(vs, axis=1)
        q = constrain(q, ("activation_batch", "activation_length", "activation_heads", None))
        new_kv = (k, v)
        if kv_cache is not None:
            k = jnp.concatenate([kv_cache[0].astype(k.dtype), k], axis=1)
            v = jnp.concatenate([kv_cache[1].astype(v.dtype), v], axis=1)
        attn = attention(q, k, v, mask)

        out, start = [], 0
        for i, (x, ecfg) in enumerate(zip(xs, cfg.experts)):
            if x is None:
                out.append(None)
                continue
            a = attn[:, start:start + x.shape[1]]
            start += x.shape[1]
            x = residual(x, Einsum((n, h, ecfg.width), ("heads", "head_dim", "embed"), dtype=dtype,
                                   name=f"attn_out_{i}")("btnh,nhd->btd", a), gates[i])
            y, res_gate = run_norm(make_norm(ecfg, f"pre_mlp_norm_{i}"), x, cond)
            gate = Einsum((2, ecfg.width, ecfg.mlp_dim), (None, "embed", "mlp"), dtype=dtype,
                          name=f"gating_{i}")("btd,cdf->cbtf", y)
            y = nn.gelu(gate[0], approximate=True) * gate[1]
            y = Einsum((ecfg.mlp_dim, ecfg.width), ("mlp", "embed"), dtype=dtype,
                       name=f"mlp_out_{i}")("btf,fd->btd", y)
            out.append(constrain(residual(x, y, res_gate), ("activation_batch", "activation_length", "activation_embed")))
        return out, new_kv


class Decoder(nn.Module):
    """The full mixture-of-transformers stack plus the backbone's (tied) token embedding."""

    cfg: DecoderConfig

    def setup(self):
        cfg = self.cfg
        width = cfg.experts[0].width
        self.embedding = self.param(
            "embedding", nn.with_logical_partitioning(nn.initializers.normal(width**-0.5), ("vocab", "embed")),
            (cfg.vocab_size, width), jnp.float32)
        block = maybe_remat(Block, cfg.remat)
        if cfg.scan:
            self.layers = nn.scan(
                block, variable_axes={"params": 0}, split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast, 0, nn.broadcast), length=cfg.depth,
                metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="layers")
        else:
            self.layers = [block(cfg, name=f"layer_{i}") for i in range(cfg.depth)]
        self.final_norms = [make_norm(e, f"final_norm_{i}") for i, e in enumerate(cfg.experts)]

    def embed(self, tokens: jax.Array) -> jax.Array:
        """tokens [B, L] int -> [B, L, D_0], scaled by sqrt(D_0) as in Gemma."""
        width = self.cfg.experts[0].width
        x = jnp.take(self.embedding, tokens, axis=0) * jnp.sqrt(float(width))
        return constrain(x.astype(jnp.dtype(self.cfg.dtype)), ("activation_batch", "activation_length", "activation_embed"))

    def logits(self, x: jax.Array) -> jax.Array:
        """Backbone outputs [B, L, D_0] -> float32 logits [B, L, vocab] through the tied embedding."""
        emb = self.embedding.astype(jnp.dtype(self.cfg.dtype))
        return jnp.einsum("bld,vd->blv", x, emb, preferred_element_type=jnp.float32)

    def __call__(self, xs: Sequence[jax.Array | None], positions: jax.Array, mask: jax.Array,
                 kv_cache: KVCache | None = None, cond: jax.Array | None = None,
                 ) -> tuple[list[jax.Array | None], KVCache]:
        """Runs all layers.

        xs: per expert [B, T_i, D_i] or None; positions: [B, sum T_i]; mask: [B, sum T_i, S + sum T_i];
        kv_cache: keys/values of S earlier tokens, each [depth, B, S, K, h]; cond: [B, D_c], the conditioning
        vector of adaptive-norm experts (pi0.5: the flow time).
        Returns final-normed outputs per expert (an adaptive norm's gate unused) and the new tokens' K/V,
        each [depth, B, sum T_i, K, h].
        """
        xs = list(xs)
        if self.cfg.scan:
            xs, new_kv = self.layers(xs, positions, mask, kv_cache, cond)
        else:
            ks, vs = [], []
            for i, layer in enumerate(self.layers):
                cache_i = None if kv_cache is None else (kv_cache[0][i], kv_cache[1][i])
                xs, (k, v) = layer(xs, positions, mask, cache_i, cond)
                ks.append(k)
                vs.append(v)
            new_kv = (jnp.stack(ks), jnp.stack(vs))
        outs = [None if x is None else run_norm(norm, x, cond)[0] for x, norm in zip(xs, self.final_norms)]
        return outs, new_kv
