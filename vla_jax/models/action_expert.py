"""How the robot state and the flow time enter the action expert: pi0 or pi0.5 (``config.model.action_expert``).

``pi0``   the suffix is a state token ``state_proj(state)`` (its own attention block), then H action tokens
          ``time_mlp_out(swish(time_mlp_in([action_in_proj(x_t), posemb(t)])))`` (one block).
``pi05``  the suffix is H action tokens ``action_in_proj(x_t)`` (one block); the flow time becomes
          ``cond = swish(time_mlp_out(swish(time_mlp_in(posemb(t)))))``, which drives an adaptive RMSNorm
          (scale, shift, residual gate) in every action-expert layer and its final norm; there is no state
          token: the state enters the prompt as 256-bin text (``config.data.prompt_format="pi05"``).

Each is a flax module registered in :data:`ACTION_EXPERTS`. The VLA shares its parameter scope with it, so the
parameters keep the published flat names (``state_proj``, ``action_in_proj``, ``time_mlp_in``, ...).
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from vla_jax.models.layers import Einsum

Suffix = tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]  # tokens [B, T, D_e], mask, ar [B, T], cond


def posemb_sincos(t: jax.Array, dim: int, min_period: float = 4e-3, max_period: float = 4.0,
                  openpi: bool = False) -> jax.Array:
    """Sine-cosine embedding of the flow time. t: [B] -> [B, dim].

    ``openpi``: the angle written as openpi writes it (same value, openpi's float32 rounding)."""
    fraction = jnp.linspace(0.0, 1.0, dim // 2)
    period = min_period * (max_period / min_period) ** fraction
    if openpi:
        angle = jnp.einsum("i,j->ij", t.astype(jnp.float32), 1.0 / period * 2 * math.pi,
                           precision=jax.lax.Precision.HIGHEST)
    else:
        angle = t[:, None].astype(jnp.float32) * (2 * math.pi / period)[None, :]
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


class ActionExpertInput(nn.Module):
    """Base: builds the suffix from state [B, S], noisy actions x_t [B, H, A] and flow time t [B]."""

    width: int  # action-expert width D_e
    max_state_dim: int
    max_action_dim: int
    dtype: str
    openpi: bool  # openpi's time-embedding expression (config.model.openpi_semantics)

    ADAPTIVE_NORM: ClassVar[bool]  # the decoder's action expert uses AdaptiveRMSNorm driven by ``cond``
    STATE_TOKEN: ClassVar[bool]  # the suffix starts with a state token (add-ons' ``suffix_state_token`` hook)

    def linear(self, shape: tuple[int, int], axes: tuple[str | None, str | None]) -> Einsum:
        return Einsum(shape, axes, bias_axes=axes[1:], dtype=jnp.dtype(self.dtype))

    def __call__(self, state: jax.Array, x_t: jax.Array, t: jax.Array,
                 state_token_hook: Callable[[jax.Array], jax.Array]) -> Suffix:
        raise NotImplementedError


class Pi0Input(ActionExpertInput):
    """pi0: state token + H action tokens mixed with the time embedding by a 2-layer swish MLP; no cond."""

    ADAPTIVE_NORM = False
    STATE_TOKEN = True

    def setup(self):
        w = self.width
        self.state_proj = self.linear((self.max_state_dim, w), (None, "embed"))
        self.action_in_proj = self.linear((self.max_action_dim, w), (None, "embed"))
        self.time_mlp_in = self.linear((2 * w, w), (None, "embed"))
        self.time_mlp_out = self.linear((w, w), ("embed", None))

    def __call__(self, state, x_t, t, state_token_hook):
        b, h = x_t.shape[:2]
        state_tok = state_token_hook(self.state_proj("bs,sd->bd", state))[:, None]
        act = self.action_in_proj("bha,ad->bhd", x_t)
        temb = jnp.broadcast_to(posemb_sincos(t, self.width, openpi=self.openpi)[:, None].astype(act.dtype),
                                act.shape)
        act = self.time_mlp_in("bhd,de->bhe", jnp.concatenate([act, temb], axis=-1))
        act = self.time_mlp_out("bhd,de->bhe", nn.swish(act))
        ar = jnp.zeros((b, 1 + h), bool).at[:, :2].set(True)
        return jnp.concatenate([state_tok, act], axis=1), jnp.ones((b, 1 + h), bool), ar, None


class Pi05Input(ActionExpertInput):
    """pi0.5: H action tokens ``action_in_proj(x_t)``; the time MLP's output is the adaptive norms' cond."""

    ADAPTIVE_NORM = True
    STATE_TOKEN = False

    def setup(self):
        w = self.width
        self.action_in_proj = self.linear((self.max_action_dim, w), (None, "embed"))
        self.time_mlp_in = self.linear((w, w), (None, "embed"))
        self.time_mlp_out = self.linear((w, w), ("embed", None))

    def __call__(self, state, x_t, t, state_token_hook):
        b, h = x_t.shape[:2]
        act = self.action_in_proj("bha,ad->bhd", x_t)
        cond = posemb_sincos(t, self.width, openpi=self.openpi).astype(act.dtype)
        cond = nn.swish(self.time_mlp_out("bd,de->be", nn.swish(self.time_mlp_in("bd,de->be", cond))))
        ar = jnp.zeros((b, h), bool).at[:, 0].set(True)
        return act, jnp.ones((b, h), bool), ar, cond


ACTION_EXPERTS: dict[str, type[ActionExpertInput]] = {"pi0": Pi0Input, "pi05": Pi05Input}
