"""What the core model hands its add-ons: the prefix while it is being embedded, and once it has run.

``PrefixInputs`` exists while :meth:`VLA.embed_prefix` builds the prefix (the observation, the embedded
text, a scratch dict for add-ons); :class:`Prefix` is the result, a pytree that travels from
``encode_prefix`` into every flow step and decoding step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

LossTerms = dict[str, tuple[jax.Array, jax.Array]]  # name -> (per-example sum [B], per-example count [B])


@dataclasses.dataclass
class PrefixInputs:
    """The prefix under construction.

    obs: the observation / batch dict (vla_jax/batch.py); text: embedded tokens [B, L, D];
    embed_tokens: the backbone's token embedding (ids [B, T] -> [B, T, D]); features: feature maps
    add-ons share while embedding (dropped afterwards); extras: values add-ons compute while embedding
    (e.g. keypoints) that travel on with the :class:`Prefix`, by name.
    """

    obs: dict
    text: jax.Array
    embed_tokens: Callable[[jax.Array], jax.Array]
    features: dict[str, Any] = dataclasses.field(default_factory=dict)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def prompt_mask(self) -> jax.Array:
        """[B, L] bool: the instruction tokens (real and not part of a causal answer)."""
        mask = self.obs["token_mask"]
        return mask & ~self.obs.get("token_ar", jnp.zeros_like(mask))


@flax.struct.dataclass
class Prefix:
    """The prefix (images, text [, the discrete head's state token]).

    tokens [B, P, D], mask [B, P] (real tokens), ar [B, P] (causal flags); once the backbone has run:
    kv (its K/V cache, [depth, B, P, K, h] each), outputs [B, P, D] (final backbone outputs),
    last_output [B, D] and last_logits float32 [B, V] at the last visible token; extras: add-on values.
    """

    tokens: jax.Array
    mask: jax.Array
    ar: jax.Array
    kv: Any = None
    outputs: jax.Array | None = None
    last_output: jax.Array | None = None
    last_logits: jax.Array | None = None
    extras: dict[str, Any] = flax.struct.field(default_factory=dict)

    @property
    def visible(self) -> jax.Array:
        """[B, P] bool: what the suffix may attend to (real tokens minus text answers, which are absent at
        inference)."""
        return self.mask & ~self.ar


def last_token(x: jax.Array, mask: jax.Array) -> jax.Array:
    """x [B, T, D] at each row's last position where mask [B, T] -> [B, D]."""
    last = mask.shape[1] - 1 - jnp.argmax(mask[:, ::-1], axis=1)
    return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]
