"""``keypoints(num=32)``: instruction-conditioned spatial-softmax keypoints added to every image token.

Levine et al. 2016, "End-to-end training of deep visuomotor policies" (robomimic's and Diffusion Policy's
image encoders). A 3x3 convolution of the conv stem's stride-4 feature map gives K heat maps; the softmax
over positions of each gives its expected (x, y) in [-1, 1]. Each heat map also gets
``sum_c feature_c * q_ck(cond)``, a per-image 1x1 filter computed from the instruction (``cond``: its
mean token embedding at unit RMS; FiLM-like, as RT-1 conditions its image encoder), so a keypoint can be
"where the named object is". The 2K coordinates, projected to the ViT width, are added to every token of
the image: a token stands for a whole patch, the keypoints say where inside it an object is. The query
and the projections start at zero, so a model loaded without them starts unchanged.

With ``location_tokens`` the add-on also trains: camera 0's keypoint 0 regresses to the center of the
cell that a grounding answer names (loss ``keypoint``). With ``prefix_readout`` the present cameras'
keypoints, projected, join the readout.

Params: ``conv_{w,b}`` [3, 3, c_1, K], ``query`` [D, c_1, K], ``proj/{w,b}`` [2K, D_vit], ``readout/w``
[C 2K, D]. Extras: ``keypoints`` [B, C, K, 2] (zero for absent cameras).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vla_jax.models.addons import register
from vla_jax.models.addons.base import Addon, find
from vla_jax.models.addons.conv_stem import ConvStem, conv3x3
from vla_jax.models.addons.location_tokens import LocationTokens
from vla_jax.models.layers import Einsum, param
from vla_jax.models.prefix import LossTerms, Prefix, PrefixInputs


def spatial_softmax(heat: jax.Array) -> jax.Array:
    """heat maps [N, H, W, K] -> expected (x, y) of each map's softmax over positions, [N, K, 2] in [-1, 1]."""
    n, h, w, k = heat.shape
    probs = jax.nn.softmax(heat.astype(jnp.float32).reshape(n, h * w, k), axis=1).reshape(n, h, w, k)
    xs, ys = jnp.linspace(-1.0, 1.0, w), jnp.linspace(-1.0, 1.0, h)
    return jnp.stack([jnp.einsum("nhwk,w->nk", probs, xs), jnp.einsum("nhwk,h->nk", probs, ys)], axis=-1)


def instruction_vector(text: jax.Array, prompt: jax.Array) -> jax.Array:
    """Embedded tokens [B, L, D] and the prompt's mask [B, L] (answers excluded) -> [B, D]: the mean prompt
    embedding scaled to unit RMS (float32)."""
    m = prompt.astype(jnp.float32)[..., None]
    v = (text.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    return v * jax.lax.rsqrt(jnp.mean(v * v, axis=-1, keepdims=True) + 1e-6)


@register("keypoints")
class Keypoints(Addon):
    num: int = 32

    LOSS_NAMES = ("keypoint",)
    STEM_LEVEL = 1  # the conv stem's second output: stride 4

    def configure(self, names: Sequence[str]):
        self.need(self.num >= 1, f"keypoints(num={self.num}) must be >= 1")
        stem = names.index("conv_stem") if "conv_stem" in names else None
        self.need(stem is not None and stem < names.index("keypoints"),
                  "keypoints needs conv_stem before it in config.model.addons (they come from its stride-4 features)")
        return self.model

    def losses(self) -> tuple[str, ...]:
        return self.LOSS_NAMES if any(s.name == "location_tokens" for s in self.model.addons) else ()

    def setup(self):
        m = self.model
        dtype = jnp.dtype(m.vit.dtype)
        c = self._stem_channels()
        self.conv_w = param(self, "conv_w", nn.initializers.lecun_normal(), (3, 3, c, self.num), (None,) * 4)
        self.conv_b = param(self, "conv_b", nn.initializers.zeros, (self.num,), (None,))
        self.query = param(self, "query", nn.initializers.zeros, (m.decoder.experts[0].width, c, self.num),
                           ("embed", None, None))
        self.proj = Einsum((2 * self.num, m.vit.width), (None, "embed"), bias_axes=("embed",), dtype=dtype,
                           init=nn.initializers.zeros)
        self.readout = Einsum((m.num_cameras * 2 * self.num, m.decoder.experts[0].width), (None, "embed"),
                              dtype=jnp.dtype(m.decoder.dtype), init=nn.initializers.zeros)

    def _stem_channels(self) -> int:
        """Channels of the conv stem's stride-4 output (the configured conv_stem's)."""
        spec = next(s for s in self.model.addons if s.name == "conv_stem")
        return int(dict(spec.kwargs).get("channels", ConvStem.channels)[self.STEM_LEVEL])

    def patch_tokens(self, x: jax.Array, inputs: PrefixInputs) -> jax.Array:
        """x [N, n, D_vit] (N = B * C); stores the keypoints [B, C, K, 2] in ``inputs.extras``."""
        dtype = jnp.dtype(self.model.vit.dtype)
        features = inputs.features["conv_stem"][self.STEM_LEVEL]
        b, cams = inputs.obs["images"].shape[:2]
        cond = jnp.repeat(instruction_vector(inputs.text, inputs.prompt_mask), cams, axis=0)
        heat = conv3x3(features, self.conv_w, self.conv_b, 1, dtype)
        filters = jnp.einsum("ne,eck->nck", cond.astype(dtype), self.query.astype(dtype))
        points = spatial_softmax(heat + jnp.einsum("nhwc,nck->nhwk", features, filters))
        present = inputs.obs["image_mask"][:, :, None, None]
        inputs.extras["keypoints"] = jnp.where(present, points.reshape(b, cams, *points.shape[1:]), 0.0)
        return x + self.proj("nk,kd->nd", points.reshape(points.shape[0], -1))[:, None, :]

    def readout_term(self, prefix: Prefix) -> jax.Array:
        """The present cameras' keypoints, projected: [B, D] (see prefix_readout)."""
        points = prefix.extras["keypoints"]
        return self.readout("bk,kd->bd", points.reshape(points.shape[0], -1))

    def loss_terms(self, batch: dict, prefix: Prefix, addons: Sequence[Addon]) -> LossTerms:
        """{"keypoint": (sum, count) [B]} with location tokens, else {}: the squared distance of camera 0's
        keypoint 0 from the center of the cell the example's text answer names."""
        locations = find(addons, LocationTokens)
        if locations is None:
            return {}
        target, has = locations.named_cell(batch)
        has = has & batch["image_mask"][:, 0]
        err = jnp.square(prefix.extras["keypoints"][:, 0, 0].astype(jnp.float32) - target).sum(-1)
        return {"keypoint": (jnp.where(has, err, 0.0), has.astype(jnp.float32))}
