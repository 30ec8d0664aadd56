"""The extension point of the pi0 core: the hooks an add-on may implement (each a no-op by default).

The core calls them in this order (``docs/architecture.md`` draws it):

=====================  ==========================================  =====================================
hook                   when                                        shapes
=====================  ==========================================  =====================================
``configure``          config time, once                           core config -> core config
``pixels``             before the ViT's patch embedding            [N, R, R, 3] -> [N, r, r, c]
``patch_tokens``       ViT tokens before its encoder blocks        [N, n, D_vit]
``image_tokens``       image tokens after projection to the LM     [B, C, n, D]
``prefix_outputs``     after the backbone ran over the prefix      -> extras to add to the Prefix
``text_logits``        every text logit computation                [B, T, V]
``suffix_state_token`` the suffix's first token (flow head)        [B, D_e]
``loss_terms``         extra loss terms                            -> {name: (sum [B], count [B])}
=====================  ==========================================  =====================================

``N`` = B * C images, ``n`` tokens per image. Hooks that need another add-on get the tuple of all of
them (``addons``) and look it up by type.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax

from vla_jax.models.prefix import LossTerms, Prefix, PrefixInputs


class Addon(nn.Module):
    """Base class. Dataclass fields of a subclass are its config; ``model`` is the core ``VLAConfig``."""

    model: Any

    CORE_FIELDS: ClassVar[tuple[str, ...]] = ("model", "parent", "name")
    LOSS_NAMES: ClassVar[tuple[str, ...]] = ()  # loss terms this add-on may add (config.loss_weights keys)

    def configure(self, names: Sequence[str]):
        """Validates the add-on (``names``: all configured add-ons, in order) and returns the core config,
        adjusted if the add-on changes it. Raises ValueError with one line naming the field."""
        return self.model

    def losses(self) -> tuple[str, ...]:
        """The loss terms :meth:`loss_terms` returns with this configuration."""
        return self.LOSS_NAMES

    def required_tokens(self) -> dict[str, int]:
        """``{piece: id}`` the tokenizer must encode as exactly that single id (reads only the add-on's own
        fields: the data layer calls it without a core config)."""
        return {}

    def need(self, cond: bool, msg: str) -> None:
        if not cond:
            raise ValueError(msg)

    # ------------------------------------------------------------------ hooks
    def pixels(self, x: jax.Array, inputs: PrefixInputs) -> jax.Array:
        return x

    def patch_tokens(self, x: jax.Array, inputs: PrefixInputs) -> jax.Array:
        return x

    def image_tokens(self, x: jax.Array, inputs: PrefixInputs) -> jax.Array:
        return x

    def prefix_outputs(self, prefix: Prefix) -> dict[str, Any]:
        return {}

    def text_logits(self, logits: jax.Array, out: jax.Array, prefix: Prefix) -> jax.Array:
        return logits

    def suffix_state_token(self, token: jax.Array, prefix: Prefix, addons: Sequence["Addon"]) -> jax.Array:
        return token

    def loss_terms(self, batch: dict, prefix: Prefix, addons: Sequence["Addon"]) -> LossTerms:
        return {}


def find(addons: Sequence[Addon], cls: type) -> Any:
    """The add-on of type ``cls`` among ``addons``, or None."""
    return next((a for a in addons if isinstance(a, cls)), None)

