"""Layers shared by the PyTorch port's core and add-ons (each the op of the JAX model, in float32 where it is)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.Module):
    """LayerNorm (eps 1e-6) computed in float32, returned in the input dtype."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        mean = x32.mean(-1, keepdim=True)
        var = (x32 - mean).square().mean(-1, keepdim=True)
        y = (x32 - mean) * torch.rsqrt(var + 1e-6) * self.weight.float() + self.bias.float()
        return y.to(x.dtype)


class RMSNorm(nn.Module):
    """Gemma RMSNorm: ``x * rsqrt(mean(x^2) + 1e-6) * (1 + weight)`` in float32 (weight is 0-centred)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + 1e-6)
        return (y * (1.0 + self.weight.float())).to(x.dtype)


class AdaptiveRMSNorm(nn.Module):
    """pi0.5's adaptive RMSNorm: ``modulation`` (Linear D_c -> 3 D) of a conditioning vector gives scale, shift and
    a residual gate. x [B, T, D], cond [B, D_c] (or [1, D_c]) -> (``rms(x) * (1 + scale) + shift`` [B, T, D] in the
    input dtype, rms in float32; gate [B, 1, D])."""

    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.modulation = nn.Linear(cond_dim, 3 * dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale, shift, gate = self.modulation(cond.to(x.dtype))[:, None, :].chunk(3, dim=-1)
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + 1e-6)
        return (y * (1.0 + scale.float()) + shift.float()).to(x.dtype), gate


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def rope(x: torch.Tensor, positions: torch.Tensor, max_wavelength: float = 10_000.0) -> torch.Tensor:
    """Rotary embedding (halves convention). x [B, T, n, h], positions [B, T] int -> same dtype as x."""
    h = x.shape[-1]
    half = h // 2
    freq = max_wavelength ** (2.0 * torch.arange(half, dtype=torch.float32) / h)
    angle = positions.float()[:, :, None, None] / freq
    sin, cos = torch.sin(angle), torch.cos(angle)
    x32 = x.float()
    x1, x2 = x32[..., :half], x32[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Grouped-query attention with float32 logits. q [B, T, N, h]; k, v [B, S, K, h]; mask [B, T, S] bool.
    Returns [B, T, N * h]. Fully masked rows get a uniform distribution (as in the JAX model)."""
    b, t, n, h = q.shape
    kh = k.shape[2]
    q = q.reshape(b, t, kh, n // kh, h).permute(0, 2, 3, 1, 4)           # [B, K, G, T, h]
    kt = k.permute(0, 2, 3, 1).unsqueeze(2)                               # [B, K, 1, h, S]
    logits = torch.matmul(q.float(), kt.float()) * (h ** -0.5)            # [B, K, G, T, S]
    logits = logits.masked_fill(~mask[:, None, None], torch.finfo(torch.float32).min)
    probs = torch.softmax(logits, dim=-1).to(v.dtype)
    out = torch.matmul(probs, v.permute(0, 2, 1, 3).unsqueeze(2))        # [B, K, G, T, h]
    return out.permute(0, 3, 1, 2, 4).reshape(b, t, n * h)


def make_attn_mask(mask: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
    """mask, ar [B, T] bool -> [B, T, T]: i may attend to j iff cumsum(ar)[j] <= cumsum(ar)[i], both real."""
    cum = torch.cumsum(ar.long(), dim=1)
    return (cum[:, None, :] <= cum[:, :, None]) & mask[:, None, :] & mask[:, :, None]


def posemb_sincos(t: torch.Tensor, dim: int, min_period: float = 4e-3, max_period: float = 4.0,
                  openpi: bool = False) -> torch.Tensor:
    """Sine-cosine embedding of the flow time. t: [B] (or scalar) float32 -> [B, dim] (or [dim]).
    ``openpi``: the angle written as openpi writes it (``t * (1 / period * 2 pi)``). The fraction is
    ``jnp.linspace(0, 1, dim // 2)`` as JAX rounds it in float32 (``i * (1 / (n - 1))``; torch.linspace differs by
    an ulp on some entries, which angles up to 2 pi / 4e-3 ~ 1,600 rad turn into 1e-5 on the velocity)."""
    n = dim // 2
    fraction = torch.arange(n, dtype=torch.float32) * (1.0 / max(n - 1, 1))
    period = min_period * (max_period / min_period) ** fraction
    angle = t.float()[..., None] * ((1.0 / period * 2 * math.pi) if openpi else (2 * math.pi / period))
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)
