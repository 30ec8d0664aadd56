"""RT-2 / OpenVLA-style discrete action tokens.

Normalized actions in [-1, 1] are cut into ``NUM_BINS`` uniform bins; bin ``b`` maps to token id
``vocab_size - 1 - b`` (the last ``NUM_BINS`` ids of the vocabulary). Decoding returns bin centers,
so the round-trip error is at most half a bin width (``1 / NUM_BINS``).
"""

from __future__ import annotations

import jax.numpy as jnp
import jax

NUM_BINS = 256
BIN_WIDTH = 2.0 / NUM_BINS


def encode(actions: jax.Array, vocab_size: int) -> jax.Array:
    """actions [...] in [-1, 1] (clipped) -> token ids [...] int32 in [vocab_size - 256, vocab_size)."""
    bins = jnp.floor((jnp.clip(actions, -1.0, 1.0) + 1.0) / BIN_WIDTH).astype(jnp.int32)
    bins = jnp.clip(bins, 0, NUM_BINS - 1)
    return (vocab_size - 1 - bins).astype(jnp.int32)


def decode(tokens: jax.Array, vocab_size: int) -> jax.Array:
    """token ids [...] -> bin-center actions [...] float32 in [-1, 1]. Non-action ids are clamped."""
    bins = jnp.clip(vocab_size - 1 - tokens, 0, NUM_BINS - 1)
    return -1.0 + (bins.astype(jnp.float32) + 0.5) * BIN_WIDTH


def is_action_token(tokens: jax.Array, vocab_size: int) -> jax.Array:
    """Boolean mask of ids that belong to the action-bin range."""
    return tokens >= vocab_size - NUM_BINS
