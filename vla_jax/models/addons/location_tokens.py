"""``location_tokens(grid=8, first_id=4)``: the ``<locRC>`` tokens that name cells of camera 0's image are
tied to that camera's image tokens, both ways.

Grounding answers ("where is the red cup?" -> ``<loc35>``) name one of ``grid`` x ``grid`` cells; token
``<locRC>`` has id ``first_id + R * grid + C``. In: each camera-0 image token gets the mean input
embedding of the cells it holds. Out: a location token's logit adds ``out . cell / sqrt(D)``, ``cell``
being the final output of the image token holding it, so answering "where" is pointing at the matching
image token (a pointer network) rather than reading a position out of a value vector; from scratch that
takes several times fewer steps (docs/experiments.md). PaliGemma learns the same from data.

No parameters of its own (it uses the backbone's token embedding). Extras: ``location_embeddings``
[G^2, D], ``location_cells`` [B, G^2, D] (after the backbone ran).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vla_jax.models.addons import register
from vla_jax.models.addons.base import Addon
from vla_jax.models.prefix import Prefix, PrefixInputs


def location_weights(patch_grid: int, location_grid: int) -> np.ndarray:
    """float32 [patch_grid^2, location_grid^2]: row t averages the location cells whose centers fall in
    image token t (row-major both), so token t gets the mean embedding of "its" ``<locRC>`` tokens."""
    centers = (np.arange(location_grid) + 0.5) / location_grid
    token_of = np.minimum((centers * patch_grid).astype(int), patch_grid - 1)  # cell row / col -> token row / col
    w = np.zeros((patch_grid * patch_grid, location_grid * location_grid), np.float32)
    for r in range(location_grid):
        for c in range(location_grid):
            w[token_of[r] * patch_grid + token_of[c], r * location_grid + c] = 1.0
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1.0)


@register("location_tokens")
class LocationTokens(Addon):
    grid: int = 8
    first_id: int = 4

    def configure(self, names: Sequence[str]):
        vocab = self.model.decoder.vocab_size
        self.need(self.grid >= 1 and 0 <= self.first_id and self.first_id + self.grid**2 <= vocab,
                  f"location_tokens(grid={self.grid}, first_id={self.first_id}): the {self.grid**2} location tokens "
                  f"must lie inside the vocabulary (config.model.vocab_size={vocab})")
        return self.model

    def required_tokens(self) -> dict[str, int]:
        g = self.grid
        return {f"<loc{r}{c}>": self.first_id + r * g + c for r in range(g) for c in range(g)}

    @property
    def _patch_grid(self) -> int:
        return int(round(self.model.vit.num_patches ** 0.5))

    def image_tokens(self, x: jax.Array, inputs: PrefixInputs) -> jax.Array:
        """x [B, C, n, D]: camera 0's tokens get their cells' location-token embeddings."""
        loc = inputs.embed_tokens(jnp.arange(self.first_id, self.first_id + self.grid**2)[None])[0]
        inputs.extras["location_embeddings"] = loc
        w = jnp.asarray(location_weights(self._patch_grid, self.grid), loc.dtype)
        return x.at[:, 0].add(jnp.einsum("ng,gd->nd", w, loc).astype(x.dtype))

    def prefix_outputs(self, prefix: Prefix) -> dict:
        """``location_cells`` [B, G^2, D]: per cell the final output of the camera-0 image token that holds it
        (zero where camera 0 is missing, read from the prefix mask)."""
        n = self.model.vit.num_patches
        held = jnp.asarray(location_weights(self._patch_grid, self.grid) > 0, prefix.outputs.dtype)
        cells = jnp.einsum("ng,bnd->bgd", held, prefix.outputs[:, :n])
        return {"location_cells": jnp.where(prefix.mask[:, :1, None], cells, 0.0)}

    def text_logits(self, logits: jax.Array, out: jax.Array, prefix: Prefix) -> jax.Array:
        """Adds the pointer term ``out . cells / sqrt(D)`` to the location tokens' logits [B, T, V]."""
        cells = prefix.extras["location_cells"]
        pointer = jnp.einsum("btd,bgd->btg", out.astype(jnp.float32), cells.astype(jnp.float32)) * out.shape[-1] ** -0.5
        return logits.at[..., self.first_id:self.first_id + self.grid**2].add(pointer)

    def readout_term(self, prefix: Prefix) -> jax.Array:
        """[B, D]: the input embedding of the location the last visible token points at (expected under the
        location tokens' softmax of ``prefix.last_logits``), see prefix_readout."""
        probs = jax.nn.softmax(prefix.last_logits[:, self.first_id:self.first_id + self.grid**2], axis=-1)
        loc = prefix.extras["location_embeddings"]
        return jnp.einsum("bg,gd->bd", probs.astype(loc.dtype), loc).astype(prefix.last_output.dtype)

    def named_cell(self, batch: dict) -> tuple[jax.Array, jax.Array]:
        """The center (x, y) in [-1, 1] of the first cell a text answer names, [B, 2], and whether one does [B]."""
        g, first, tokens = self.grid, self.first_id, batch["tokens"]
        is_loc = batch["token_mask"] & batch["token_ar"] & (tokens >= first) & (tokens < first + g * g)
        cell = jnp.take_along_axis(tokens, jnp.argmax(is_loc, axis=1)[:, None], axis=1)[:, 0] - first
        target = (jnp.stack([cell % g, cell // g], axis=-1).astype(jnp.float32) + 0.5) / g * 2.0 - 1.0
        return target, is_loc.any(axis=1)
