"""``prefix_readout``: the backbone's final output at the last prompt token joins the action expert's state
token (flow head).

That output is the vector a grounding answer ("where the target is") is decoded from, which a shallow
backbone computes only in its last layer, after the action expert could read it through attention
(docs/experiments.md). The readout is that output plus whatever the other add-ons contribute through a
``readout_term(prefix) -> [B, D]`` method (``location_tokens``: the embedding of the location it points at;
``keypoints``: the projected keypoints), projected to the expert width and added to the state token.

Params: ``proj/{w,b}`` [D, D_e].
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from vla_jax.models.addons import register
from vla_jax.models.addons.base import Addon
from vla_jax.models.layers import Einsum
from vla_jax.models.prefix import Prefix


@register("prefix_readout")
class PrefixReadout(Addon):

    def configure(self, names: Sequence[str]):
        self.need(self.model.action_head == "flow",
                  "prefix_readout needs config.model.action_head='flow' (it feeds the action expert's state token); "
                  "remove it from config.model.addons")
        return self.model

    def setup(self):
        m = self.model
        self.proj = Einsum((m.decoder.experts[0].width, m.decoder.experts[1].width), (None, "embed"),
                           bias_axes=("embed",), dtype=jnp.dtype(m.decoder.dtype))

    def readout(self, prefix: Prefix, addons: Sequence[Addon]) -> jax.Array:
        """[B, D]: the last visible token's output plus the other add-ons' readout terms."""
        vector = prefix.last_output
        for addon in addons:
            if hasattr(addon, "readout_term"):
                vector = vector + addon.readout_term(prefix)
        return vector

    def suffix_state_token(self, token: jax.Array, prefix: Prefix, addons: Sequence[Addon]) -> jax.Array:
        return token + self.proj("bd,de->be", self.readout(prefix, addons).astype(token.dtype))
