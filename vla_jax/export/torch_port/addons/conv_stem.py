"""Port of ``vla_jax/models/addons/conv_stem.py``: stride-2 3x3 convolutions, each + LayerNorm over channels + ReLU."""

from __future__ import annotations

import torch
from torch import nn

from ..layers import LayerNorm
from .base import PrefixInputs, TorchAddon


class ConvStem(TorchAddon):
    """Params ``conv_{i}.{weight,bias}`` (Conv2d), ``norm_{i}.{weight,bias}``; features (NCHW) in ``conv_stem``."""

    def __init__(self, config: dict, channels=(16, 32, 64, 128)):
        super().__init__(config)
        ins = [3] + list(channels[:-1])
        self.num = len(channels)
        for i, (a, b) in enumerate(zip(ins, channels)):
            self.add_module(f"conv_{i}", nn.Conv2d(a, b, kernel_size=3, stride=2, padding=1))
            self.add_module(f"norm_{i}", LayerNorm(b))

    def pixels(self, x: torch.Tensor, inputs: PrefixInputs) -> torch.Tensor:
        """[N, R, R, 3] -> [N, R / 2^k, R / 2^k, channels[-1]] (NHWC in and out)."""
        x = x.permute(0, 3, 1, 2).to(self.conv_0.weight.dtype)
        features = []
        for i in range(self.num):
            x = getattr(self, f"conv_{i}")(x)
            x = torch.relu(getattr(self, f"norm_{i}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
            features.append(x)
        inputs.features["conv_stem"] = features
        return x.permute(0, 2, 3, 1)
