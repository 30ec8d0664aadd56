"""Port of ``vla_jax/models/addons/prefix_readout.py``: the prefix readout joins the action expert's state token."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import Prefix, TorchAddon


class PrefixReadout(TorchAddon):
    """Params ``proj`` (Linear D -> D_e)."""

    def __init__(self, config: dict):
        super().__init__(config)
        experts = config["decoder"]["experts"]
        self.proj = nn.Linear(experts[0]["width"], experts[1]["width"])

    def suffix_state_token(self, token: torch.Tensor, prefix: Prefix, addons: Sequence[TorchAddon]) -> torch.Tensor:
        vector = prefix.last_output
        for addon in addons:
            if hasattr(addon, "readout_term"):
                vector = vector + addon.readout_term(prefix)
        return token + self.proj(vector.to(token.dtype))
