"""Port of ``vla_jax/models/addons/location_tokens.py``: ``<locRC>`` tokens tied to camera 0's image tokens."""

from __future__ import annotations

import numpy as np
import torch

from .base import Prefix, PrefixInputs, TorchAddon


def location_weights(patch_grid: int, location_grid: int) -> np.ndarray:
    """float32 [patch_grid^2, location_grid^2]: row t averages the location cells whose centers fall in image
    token t (row-major both)."""
    centers = (np.arange(location_grid) + 0.5) / location_grid
    token_of = np.minimum((centers * patch_grid).astype(int), patch_grid - 1)
    w = np.zeros((patch_grid * patch_grid, location_grid * location_grid), np.float32)
    for r in range(location_grid):
        for c in range(location_grid):
            w[token_of[r] * patch_grid + token_of[c], r * location_grid + c] = 1.0
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1.0)


class LocationTokens(TorchAddon):
    """No parameters. Extras: ``location_embeddings`` [G^2, D], ``location_cells`` [B, G^2, D]."""

    def __init__(self, config: dict, grid: int = 8, first_id: int = 4):
        super().__init__(config)
        self.grid, self.first = grid, first_id
        self.side = config["image_size"] // config["vit"]["patch_size"]

    def image_tokens(self, x: torch.Tensor, inputs: PrefixInputs) -> torch.Tensor:
        """x [B, C, n, D]: camera 0's tokens get their cells' location-token embeddings."""
        loc = inputs.embed_tokens(torch.arange(self.first, self.first + self.grid ** 2, device=x.device))
        inputs.extras["location_embeddings"] = loc
        w = torch.as_tensor(location_weights(self.side, self.grid), dtype=x.dtype, device=x.device)
        return torch.cat([(x[:, 0] + w @ loc.to(x.dtype))[:, None], x[:, 1:]], dim=1)

    def prefix_outputs(self, prefix: Prefix) -> dict:
        n = self.side * self.side
        out = prefix.outputs
        held = torch.as_tensor(location_weights(self.side, self.grid) > 0, dtype=out.dtype, device=out.device)
        cells = torch.einsum("ng,bnd->bgd", held, out[:, :n])
        return {"location_cells": torch.where(prefix.mask[:, :1, None], cells, torch.zeros_like(cells))}

    def text_logits(self, logits: torch.Tensor, out: torch.Tensor, prefix: Prefix) -> torch.Tensor:
        """Adds the pointer term ``out . cells / sqrt(D)`` to the location tokens' logits."""
        cells = prefix.extras["location_cells"]
        first, g2 = self.first, self.grid ** 2
        pointer = torch.einsum("btd,bgd->btg", out.float(), cells.float()) * out.shape[-1] ** -0.5
        return torch.cat([logits[..., :first], logits[..., first:first + g2] + pointer, logits[..., first + g2:]], -1)

    def readout_term(self, prefix: Prefix) -> torch.Tensor:
        probs = torch.softmax(prefix.last_logits[:, self.first:self.first + self.grid ** 2], dim=-1)
        loc = prefix.extras["location_embeddings"]
        return (probs.to(loc.dtype) @ loc).to(prefix.last_output.dtype)
