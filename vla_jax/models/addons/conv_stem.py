"""``conv_stem(channels=(16, 32, 64, 128))``: early convolutions before the ViT's patch embedding.

Xiao et al. 2021, "Early convolutions help transformers see better" (Octo's SmallStem): k stride-2 3x3
convolutions, each followed by LayerNorm over channels and ReLU, shrink the image by 2^k; the ViT then
embeds (patch_size / 2^k)-sized patches of the feature map, so the token grid is unchanged. A small ViT
trained from scratch learns local color / shape features much sooner with a stem than with one linear
patch embedding (docs/experiments.md). Each convolution's output is kept in the prefix inputs' features
(``conv_stem``: list of [N, R / 2^i, R / 2^i, c_i]) for add-ons that read feature maps (keypoints).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vla_jax.models.addons import register
from vla_jax.models.addons.base import Addon
from vla_jax.models.layers import LayerNorm, param
from vla_jax.models.prefix import PrefixInputs


def conv3x3(x: jax.Array, w: jax.Array, b: jax.Array, stride: int, dtype) -> jax.Array:
    """3x3 convolution with padding 1: [N, H, W, C] -> [N, H / stride, W / stride, F]; w [3, 3, C, F], b [F]."""
    return jax.lax.conv_general_dilated(x.astype(dtype), w.astype(dtype), (stride, stride), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + b.astype(dtype)


@register("conv_stem")
class ConvStem(Addon):
    """Params ``conv_{i}_w`` [3, 3, c_{i-1}, c_i], ``conv_{i}_b`` [c_i], ``norm_{i}/{scale,bias}``."""

    channels: tuple[int, ...] = (16, 32, 64, 128)

    def configure(self, names: Sequence[str]):
        k, patch = len(self.channels), self.model.vit.patch_size
        self.need(k >= 1 and all(int(c) >= 1 for c in self.channels),
                  f"conv_stem(channels={self.channels}) needs at least one positive channel count")
        self.need(patch % 2 ** k == 0,
                  f"conv_stem(channels={self.channels}): {k} stride-2 convolutions need config.model.vit.patch_size="
                  f"{patch} divisible by {2 ** k}")
        vit = dataclasses.replace(self.model.vit, pixel_size=self.model.image_size // 2 ** k,
                                  pixel_channels=int(self.channels[-1]))
        return dataclasses.replace(self.model, vit=vit)

    def setup(self):
        ins = (3,) + tuple(self.channels[:-1])
        self.kernels = [param(self, f"conv_{i}_w", nn.initializers.lecun_normal(), (3, 3, c_in, c), (None,) * 4)
                        for i, (c_in, c) in enumerate(zip(ins, self.channels))]
        self.biases = [param(self, f"conv_{i}_b", nn.initializers.zeros, (c,), (None,))
                       for i, c in enumerate(self.channels)]
        self.norms = [LayerNorm(name=f"norm_{i}") for i in range(len(self.channels))]

    def pixels(self, x: jax.Array, inputs: PrefixInputs) -> jax.Array:
        """[N, R, R, 3] -> [N, R / 2^k, R / 2^k, channels[-1]]."""
        dtype = jnp.dtype(self.model.vit.dtype)
        features = []
        for w, b, norm in zip(self.kernels, self.biases, self.norms):
            x = nn.relu(norm(conv3x3(x, w, b, 2, dtype)))
            features.append(x)
        inputs.features["conv_stem"] = features
        return x
