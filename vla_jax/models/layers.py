"""Small building blocks shared by the ViT and the Gemma decoder.

Every parameter is created with logical axis names (``nn.with_logical_partitioning``)
so ``vla_jax.train.sharding`` can map them to mesh axes with a rules table.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype


def param(module: nn.Module, name: str, init, shape: Sequence[int], axes: tuple[str | None, ...]) -> jax.Array:
    """Creates a float32 parameter annotated with logical axis names ``axes``."""
    assert len(axes) == len(shape), (name, shape, axes)
    return module.param(name, nn.with_logical_partitioning(init, axes), tuple(shape), jnp.float32)


class Einsum(nn.Module):
    """``y = einsum(eqn, x, w) (+ b)`` with a logically-named kernel; computes in ``dtype``."""

    shape: tuple[int, ...]
    axes: tuple[str | None, ...]
    bias_axes: tuple[str | None, ...] | None = None
    dtype: Dtype = jnp.float32
    init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, eqn: str, x: jax.Array) -> jax.Array:
        w = param(self, "w", self.init, self.shape, self.axes)
        y = jnp.einsum(eqn, x.astype(self.dtype), w.astype(self.dtype))
        if self.bias_axes is not None:
            bias_shape = self.shape[-len(self.bias_axes):]
            y = y + param(self, "b", nn.initializers.zeros, bias_shape, self.bias_axes).astype(self.dtype)
        return y


class RMSNorm(nn.Module):
    """Gemma RMSNorm: ``x * rsqrt(mean(x^2) + eps) * (1 + scale)``, computed in float32."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = param(self, "scale", nn.initializers.zeros, (x.shape[-1],), ("norm",))
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + 1e-6)
        return (y * (1.0 + scale)).astype(x.dtype)


class AdaptiveRMSNorm(nn.Module):
    """pi0.5's adaptive RMSNorm: a zero-initialised projection of a conditioning vector gives scale, shift and a
    residual gate. x [B, T, D], cond [B, D_c] -> (``rms(x) * (1 + scale) + shift`` [B, T, D], gate [B, 1, D])."""

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array) -> tuple[jax.Array, jax.Array]:
        width = x.shape[-1]
        modulation = Einsum((cond.shape[-1], 3 * width), ("embed", None), bias_axes=(None,), dtype=x.dtype,
                            init=nn.initializers.zeros, name="modulation")("bc,cd->bd", cond)
        scale, shift, gate = jnp.split(modulation[:, None, :], 3, axis=-1)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + 1e-6)
        return (y * (1.0 + scale) + shift).astype(x.dtype), gate


class LayerNorm(nn.Module):
    """LayerNorm with logically-named scale and bias, computed in float32."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = param(self, "scale", nn.initializers.ones, (x.shape[-1],), ("norm",))
        bias = param(self, "bias", nn.initializers.zeros, (x.shape[-1],), ("norm",))
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        return ((x32 - mean) * jax.lax.rsqrt(var + 1e-6) * scale + bias).astype(x.dtype)


def remat_policy(name: str):
    """Maps ``config.model.remat`` to a checkpoint policy (``None`` means no remat)."""
    policies = {
        "none": None,
        "full": jax.checkpoint_policies.nothing_saveable,
        "dots": jax.checkpoint_policies.checkpoint_dots,
        "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    }
    if name not in policies:
        raise ValueError(f"config.model.remat={name!r} is not one of {sorted(policies)}")
    return policies[name]


def maybe_remat(block_cls, remat: str, static_argnums: tuple[int, ...] = ()):
    """Wraps a block class in ``nn.remat`` unless ``remat == 'none'``."""
    policy = remat_policy(remat)
    if remat == "none":
        return block_cls
    return nn.remat(block_cls, policy=policy, prevent_cse=False, static_argnums=static_argnums)


def constrain(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
    """Logical sharding constraint on an activation (a no-op outside a mesh with rules)."""
    return nn.with_logical_constraint(x, axes)
