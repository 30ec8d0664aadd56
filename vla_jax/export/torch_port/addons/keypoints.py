"""Port of ``vla_jax/models/addons/keypoints.py``: instruction-conditioned spatial-softmax keypoints."""

from __future__ import annotations

import torch
from torch import nn

from .base import Prefix, PrefixInputs, TorchAddon

STEM_LEVEL = 1  # the conv stem's stride-4 output


def spatial_softmax(heat: torch.Tensor) -> torch.Tensor:
    """Heat maps [N, K, H, W] -> expected (x, y) of each map's softmax over positions, [N, K, 2] in [-1, 1]."""
    n, k, h, w = heat.shape
    probs = torch.softmax(heat.float().reshape(n, k, h * w), dim=-1).reshape(n, k, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=heat.device)
    ys = torch.linspace(-1.0, 1.0, h, device=heat.device)
    return torch.stack([(probs.sum(2) * xs).sum(-1), (probs.sum(3) * ys).sum(-1)], dim=-1)


class Keypoints(TorchAddon):
    """Params ``conv`` (Conv2d), ``query`` [D, C_1, K], ``proj`` (Linear 2K -> D_vit), ``readout`` (Linear
    C 2K -> D, no bias; with prefix_readout). Extras: ``keypoints`` [B, C, K, 2] (zero for absent cameras)."""

    def __init__(self, config: dict, num: int = 32):
        super().__init__(config)
        stem = next(a for a in config["addons"] if a["name"] == "conv_stem")
        channels = dict(stem["kwargs"]).get("channels", (16, 32, 64, 128))[STEM_LEVEL]
        width = config["decoder"]["experts"][0]["width"]
        self.num = num
        self.conv = nn.Conv2d(channels, num, kernel_size=3, stride=1, padding=1)
        self.query = nn.Parameter(torch.zeros(width, channels, num))
        self.proj = nn.Linear(2 * num, config["vit"]["width"])
        if any(a["name"] == "prefix_readout" for a in config["addons"]):
            self.readout = nn.Linear(config["num_cameras"] * 2 * num, width, bias=False)

    def patch_tokens(self, x: torch.Tensor, inputs: PrefixInputs) -> torch.Tensor:
        features = inputs.features["conv_stem"][STEM_LEVEL]  # [N, C_1, H, W]
        cams = inputs.image_mask.shape[1]
        m = inputs.token_mask.float()[..., None]
        v = (inputs.text.float() * m).sum(1) / m.sum(1).clamp(min=1.0)  # the mean prompt embedding, unit RMS
        cond = (v * torch.rsqrt((v * v).mean(-1, keepdim=True) + 1e-6)).repeat_interleave(cams, dim=0)
        filters = torch.einsum("ne,eck->nck", cond.to(features.dtype), self.query.to(features.dtype))
        heat = self.conv(features) + torch.einsum("nchw,nck->nkhw", features, filters)
        points = spatial_softmax(heat)  # [N, K, 2]
        per_camera = points.reshape(inputs.image_mask.shape[0], cams, self.num, 2)
        present = inputs.image_mask[:, :, None, None]
        inputs.extras["keypoints"] = torch.where(present, per_camera, torch.zeros_like(per_camera))
        return x + self.proj(points.flatten(1).to(x.dtype))[:, None, :]

    def readout_term(self, prefix: Prefix) -> torch.Tensor:
        points = prefix.extras["keypoints"]
        return self.readout(points.flatten(1).to(prefix.last_output.dtype))
