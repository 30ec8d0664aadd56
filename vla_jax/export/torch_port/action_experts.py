"""The action expert's suffix, by ``config.json``'s ``action_expert`` (``vla_jax`` ``config.model.action_expert``).

Each entry owns the suffix parameters (top-level names on the policy, as in JAX) and builds the suffix tokens;
``action_in_proj`` and ``action_out_proj`` are common to all. W = action-expert width, H horizon, A action dims:

* ``pi0``: a state token ``state_proj(state)`` (its own block, through the add-ons' ``suffix_state_token`` hook),
  then H action tokens ``time_mlp_out(swish(time_mlp_in([action_in_proj(x_t), posemb(t)])))`` (one block);
  ``time_mlp_in`` is [2W -> W]; plain RMSNorms.
* ``pi05``: H action tokens ``action_in_proj(x_t)`` (one block, opened by the first); no state token. The time
  reaches the expert only through ``cond = swish(time_mlp_out(swish(time_mlp_in(posemb(t)))))`` [B, W]
  (``time_mlp_in`` [W -> W]), which drives every action-expert RMSNorm (``AdaptiveRMSNorm``).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .addons.base import Prefix
from .layers import posemb_sincos


@dataclasses.dataclass
class Suffix:
    """tokens [B, T_s, W], ar [B, T_s] bool (every suffix token is real), cond [B or 1, W] for adaptive norms."""

    tokens: torch.Tensor
    ar: torch.Tensor
    cond: Optional[torch.Tensor] = None


def _time_embedding(policy: nn.Module, t: torch.Tensor, width: int) -> torch.Tensor:
    """t: scalar or [B] float32 -> [1 or B, W] in the compute dtype."""
    return posemb_sincos(t, width, openpi=policy.openpi).reshape(-1, width).to(policy.compute_dtype)


def _ar(tokens: torch.Tensor, opened: int) -> torch.Tensor:
    """[B, T_s] bool: the first ``opened`` suffix tokens each open a causal block."""
    b, s = tokens.shape[:2]
    return torch.arange(s, device=tokens.device)[None].expand(b, s) < opened


class Pi0:
    """pi0's suffix: state token + H action tokens mixed with the time embedding."""

    adaptive_norm = False  # the decoder's action expert uses plain RMSNorms
    state_token = True  # the suffix starts with a state token (add-ons' suffix_state_token hook)

    @staticmethod
    def modules(config: dict) -> dict[str, nn.Module]:
        w = config["decoder"]["experts"][1]["width"]
        return {"state_proj": nn.Linear(config["max_state_dim"], w), "time_mlp_in": nn.Linear(2 * w, w),
                "time_mlp_out": nn.Linear(w, w)}

    @staticmethod
    def embed(policy: nn.Module, state: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prefix: Prefix) -> Suffix:
        """state [B, S], x_t [B, H, A], t scalar or [B] -> tokens [B, 1 + H, W], ar (the first two open blocks)."""
        state_tok = policy.state_proj(state.to(policy.compute_dtype))
        for addon in policy.addons:
            state_tok = addon.suffix_state_token(state_tok, prefix, policy.addons)
        act = policy.action_in_proj(x_t.to(policy.compute_dtype))
        temb = _time_embedding(policy, t, act.shape[-1])[:, None].expand_as(act)
        act = policy.time_mlp_out(F.silu(policy.time_mlp_in(torch.cat([act, temb], dim=-1))))
        tokens = torch.cat([state_tok[:, None], act], dim=1)
        return Suffix(tokens=tokens, ar=_ar(tokens, 2))


class Pi05:
    """pi0.5's suffix: H action tokens; the time conditions the adaptive RMSNorms."""

    adaptive_norm = True  # every action-expert RMSNorm is an AdaptiveRMSNorm driven by ``cond``
    state_token = False

    @staticmethod
    def modules(config: dict) -> dict[str, nn.Module]:
        w = config["decoder"]["experts"][1]["width"]
        return {"time_mlp_in": nn.Linear(w, w), "time_mlp_out": nn.Linear(w, w)}

    @staticmethod
    def embed(policy: nn.Module, state: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prefix: Prefix) -> Suffix:
        """x_t [B, H, A], t scalar or [B] -> tokens [B, H, W], ar (the first opens the block), cond [B or 1, W].
        ``state`` is not used (pi0.5 reads the state from the prompt)."""
        tokens = policy.action_in_proj(x_t.to(policy.compute_dtype))
        temb = _time_embedding(policy, t, tokens.shape[-1])
        cond = F.silu(policy.time_mlp_out(F.silu(policy.time_mlp_in(temb))))
        return Suffix(tokens=tokens, ar=_ar(tokens, 1), cond=cond)


ACTION_EXPERTS = {"pi0": Pi0, "pi05": Pi05}
