"""The hooks of the PyTorch core (the same as ``vla_jax/models/addons/base.py``, minus training losses)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn


@dataclasses.dataclass
class PrefixInputs:
    """The prefix under construction: image_mask [B, C], tokens [B, L], token_mask [B, L], text [B, L, D]
    (embedded), embed_tokens (ids -> embeddings), features (add-ons' feature maps while embedding), extras
    (add-on values that travel on with the Prefix)."""

    image_mask: torch.Tensor
    tokens: torch.Tensor
    token_mask: torch.Tensor
    text: torch.Tensor
    embed_tokens: Callable[[torch.Tensor], torch.Tensor]
    features: dict = dataclasses.field(default_factory=dict)
    extras: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Prefix:
    """tokens [B, P, D], mask [B, P], ar [B, P]; after the backbone: cache (per layer K/V), outputs [B, P, D],
    last_output [B, D], last_logits float32 [B, V] at the last real token; extras by name."""

    tokens: torch.Tensor
    mask: torch.Tensor
    ar: torch.Tensor
    cache: Optional[list] = None
    outputs: Optional[torch.Tensor] = None
    last_output: Optional[torch.Tensor] = None
    last_logits: Optional[torch.Tensor] = None
    extras: dict = dataclasses.field(default_factory=dict)


class TorchAddon(nn.Module):
    """Base class: ``config`` is the exported config.json (dict); every hook is a no-op."""

    def __init__(self, config: dict):
        super().__init__()
        self.config = config

    def pixels(self, x: torch.Tensor, inputs: PrefixInputs) -> torch.Tensor:
        return x

    def patch_tokens(self, x: torch.Tensor, inputs: PrefixInputs) -> torch.Tensor:
        return x

    def image_tokens(self, x: torch.Tensor, inputs: PrefixInputs) -> torch.Tensor:
        return x

    def prefix_outputs(self, prefix: Prefix) -> dict[str, Any]:
        return {}

    def text_logits(self, logits: torch.Tensor, out: torch.Tensor, prefix: Prefix) -> torch.Tensor:
        return logits

    def suffix_state_token(self, token: torch.Tensor, prefix: Prefix, addons: Sequence["TorchAddon"]) -> torch.Tensor:
        return token
