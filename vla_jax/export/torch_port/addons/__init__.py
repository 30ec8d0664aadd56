"""The PyTorch port of ``vla_jax/models/addons``: one module per add-on, built by name from config.json."""

from __future__ import annotations

from .base import TorchAddon
from .conv_stem import ConvStem
from .keypoints import Keypoints
from .location_tokens import LocationTokens
from .prefix_readout import PrefixReadout

REGISTRY: dict[str, type[TorchAddon]] = {
    "conv_stem": ConvStem, "keypoints": Keypoints, "location_tokens": LocationTokens, "prefix_readout": PrefixReadout,
}
