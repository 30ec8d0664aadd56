"""The vla_jax policy in plain PyTorch, for deployment. Self-contained: stdlib, torch, numpy, safetensors.

This package (``torch_port/``) is copied verbatim into every exported folder, so a robot computer with only
PyTorch can do::

    import sys; sys.path.insert(0, "exported_folder")
    from torch_port import VLAPolicy
    policy = VLAPolicy.from_pretrained("exported_folder")
    actions = policy.sample_actions(images, image_mask, tokens, token_mask, state, state_mask, action_dim_mask)

It mirrors ``vla_jax/models`` op for op (the parity check in ``vla_jax/export/parity.py`` holds the two
within 1e-4 in float32), with the same split: this file is the core, ``action_experts.py`` the suffix of pi0 or
pi0.5 (``vla_jax/models/action_expert.py``), ``addons/`` the research add-ons (one module each, the same hooks as
the JAX model's, built from config.json's ``addons``):

* ViT: patch embedding (a strided conv over whatever pixel grid the add-ons hand it), learned position
  embedding, pre-norm blocks with GELU(tanh) MLPs, final LayerNorm (eps 1e-6, computed in float32).
* Gemma mixture of transformers: every layer has per-expert weights (suffix ``_0`` backbone, ``_1``
  action expert) and one joint attention over all experts' tokens; RMSNorm with ``(1 + weight)``,
  rotary positions, multi-/grouped-query attention with float32 logits, GeGLU (tanh GELU), tied
  input/output embedding scaled by sqrt(width).
* Prefix (images + text [+ state token for the discrete head]) and suffix, by ``action_expert``
  (``action_experts.py``): pi0's state token + action tokens mixed with a sin-cos time embedding, or pi0.5's
  action tokens alone with the time driving the action expert's adaptive RMSNorms (scale, shift, residual gate);
  attention masks from cumulative autoregressive flags.
* ``sample_actions``: the prefix runs once into a KV cache; N Euler steps (t: 1 -> 0) run only the suffix.
  The discrete head decodes H * A tokens greedily (restricted to the last 256 vocabulary ids) with a KV cache.

Inputs follow ``vla_jax/batch.py`` (B batch, C cameras, R image size, L text, S state, H horizon, A action dims):
images float32 [B, C, R, R, 3] in [-1, 1], image_mask bool [B, C], tokens int [B, L], token_mask bool [B, L],
state float32 [B, S] (normalized), state_mask bool [B, S], action_dim_mask bool [B, A], noise float32 [B, H, A].
Actions come back normalized, [B, H, A] with padded dims zero; ``unnormalize_actions`` (or
``sample_actions(..., dataset=NAME)``) maps them to robot units with the folder's ``norm_stats.json``.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np
import torch
from torch import nn

from .action_experts import ACTION_EXPERTS, Suffix
from .addons import REGISTRY as ADDONS
from .addons.base import Prefix, PrefixInputs, TorchAddon
from .layers import AdaptiveRMSNorm, LayerNorm, RMSNorm, attention, gelu_tanh, make_attn_mask, rope

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NORM_STATS_FILE = "norm_stats.json"
FORMAT = "vla_jax.torch_policy"
FORMAT_VERSION = 2  # 2: add-ons listed in config.json's "addons"
NUM_BINS = 256  # discrete head: the last 256 vocabulary ids are action bins
ACTION_HEADS = ("flow", "discrete")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_STATS_EPS = 1e-8  # vla_jax.data.norm_stats._EPS

KVCache = list  # per layer: (keys [B, S, K, h], values [B, S, K, h])

class UnsupportedModelError(ValueError):
    """The config describes a model this PyTorch module does not implement; one line naming the field."""


# ----------------------------------------------------------------------------------------- config
def check_config(cfg: dict) -> None:
    """Raises UnsupportedModelError (one line) unless ``cfg`` (config.json) is a model this module runs."""

    def need(cond, msg):
        if not cond:
            raise UnsupportedModelError(msg)

    need(cfg.get("format", FORMAT) == FORMAT, f"config.json format {cfg.get('format')!r} is not {FORMAT!r}")
    version = int(cfg.get("format_version", FORMAT_VERSION))
    need(version <= FORMAT_VERSION,
         f"config.json format_version {version} is newer than this module ({FORMAT_VERSION})")
    need(version >= 2 or not any(k in cfg for k in ("readout", "location_grid")),
         f"config.json format_version {version} keeps add-ons as model fields; re-export the checkpoint with "
         f"tools/export.py (format_version {FORMAT_VERSION})")
    for key in ("vit", "decoder", "action_head", "num_cameras", "image_size", "max_text_len", "action_horizon",
                "max_action_dim", "max_state_dim", "num_flow_steps"):
        need(key in cfg, f"config.json has no '{key}'")
    head, dec, vit = cfg["action_head"], cfg["decoder"], cfg["vit"]
    need(head in ACTION_HEADS, f"action_head={head!r} is not supported by the PyTorch module (one of {ACTION_HEADS})")
    need(len(dec["experts"]) == (2 if head == "flow" else 1),
         f"decoder.experts has {len(dec['experts'])} experts; the PyTorch module runs 2 (flow) or 1 (discrete)")
    need(dec["num_heads"] % dec["num_kv_heads"] == 0, "decoder.num_heads must be a multiple of num_kv_heads")
    need(dec["head_dim"] % 2 == 0, "decoder.head_dim must be even (rotary)")
    need(vit["width"] % vit["num_heads"] == 0, "vit.width must be divisible by vit.num_heads")
    need(cfg["image_size"] % vit["patch_size"] == 0, "image_size must be divisible by vit.patch_size")
    for addon in cfg.get("addons", ()):
        need(addon["name"] in ADDONS, f"add-on {addon['name']!r} is not implemented by the PyTorch module "
                                      f"(one of {sorted(ADDONS)})")
    need(head != "discrete" or dec["vocab_size"] > NUM_BINS, f"vocab_size must exceed {NUM_BINS} (discrete head)")
    expert = cfg.get("action_expert", "pi0")
    need(expert in ACTION_EXPERTS, f"action_expert={expert!r} is not supported by the PyTorch module "
                                   f"(one of {sorted(ACTION_EXPERTS)})")
    need(expert == "pi0" or head == "flow", f"action_expert={expert!r} needs the flow head")
    adaptive = [bool(e.get("adaptive_norm", False)) for e in dec["experts"]]
    need(adaptive == [False, ACTION_EXPERTS[expert].adaptive_norm][:len(adaptive)],
         f"decoder.experts adaptive_norm={adaptive} does not match action_expert={expert!r}")
    hooked = [a["name"] for a in cfg.get("addons", ())
              if ADDONS[a["name"]].suffix_state_token is not TorchAddon.suffix_state_token]
    need(not hooked or ACTION_EXPERTS[expert].state_token,
         f"add-ons {hooked} change the suffix's state token, which action_expert={expert!r} does not have")
    need(head == "flow" or all(a["name"] != "prefix_readout" for a in cfg.get("addons", ())),
         "prefix_readout needs the flow head")
    dtype = cfg.get("torch_dtype", "float32")
    need(dtype in DTYPES, f"torch_dtype={dtype!r} is not one of {sorted(DTYPES)}")


# ----------------------------------------------------------------------------------------- ViT
class ViTBlock(nn.Module):
    def __init__(self, width: int, mlp_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.ln_attn = LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ln_mlp = LayerNorm(width)
        self.mlp_in = nn.Linear(width, mlp_dim)
        self.mlp_out = nn.Linear(mlp_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        n = self.num_heads
        h = d // n
        qkv = self.qkv(self.ln_attn(x)).reshape(b, t, 3, n, h)
        q, k, v = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
        logits = torch.matmul(q.float(), k.float().transpose(-1, -2)) * (h ** -0.5)
        probs = torch.softmax(logits, dim=-1).to(x.dtype)
        attn = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.out(attn)
        return x + self.mlp_out(gelu_tanh(self.mlp_in(self.ln_mlp(x))))


class ViT(nn.Module):
    """Pixels [N, r, r, c] (NHWC) -> patch tokens [N, (R/p)^2, width]; :meth:`embed` then :meth:`encode`."""

    def __init__(self, vit: dict):
        super().__init__()
        width, grid = vit["width"], vit["image_size"] // vit["patch_size"]
        q = (vit.get("pixel_size") or vit["image_size"]) // grid  # patch side in the pixel grid
        self.embedding = nn.Conv2d(vit.get("pixel_channels", 3), width, kernel_size=q, stride=q)
        self.pos_embedding = nn.Parameter(torch.zeros(1, grid ** 2, width))
        self.blocks = nn.ModuleList(ViTBlock(width, vit["mlp_dim"], vit["num_heads"]) for _ in range(vit["depth"]))
        self.ln_final = LayerNorm(width)

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embedding(pixels.permute(0, 3, 1, 2).to(self.embedding.weight.dtype))  # [N, D, R/p, R/p]
        return x.flatten(2).transpose(1, 2) + self.pos_embedding.to(x.dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.ln_final(x)


# ----------------------------------------------------------------------------------------- decoder
def make_norm(expert: dict) -> nn.Module:
    """An expert's RMSNorm: adaptive (``adaptive_norm``, conditioned on a vector of the expert's width) or plain."""
    width = expert["width"]
    return AdaptiveRMSNorm(width, width) if expert.get("adaptive_norm") else RMSNorm(width)


def run_norm(norm: nn.Module, x: torch.Tensor, cond: Optional[torch.Tensor]):
    """(normed x, the residual gate [B, 1, D] of an adaptive norm, else None)."""
    if not isinstance(norm, AdaptiveRMSNorm):
        return norm(x), None
    if cond is None:
        raise ValueError("an adaptive-norm expert runs only with the decoder's cond (the flow time)")
    return norm(x, cond)


def residual(x: torch.Tensor, y: torch.Tensor, gate: Optional[torch.Tensor]) -> torch.Tensor:
    """``x + y``, or ``x + y * gate`` after an adaptive norm."""
    return x + y if gate is None else x + y * gate


class DecoderLayer(nn.Module):
    """One mixture-of-transformers layer. Per expert ``e``: pre_attn_norm_e, q_e, k_e, v_e, attn_out_e,
    pre_mlp_norm_e, gate_e, up_e, mlp_out_e. Attention runs once over all experts' tokens. An adaptive-norm
    expert gates its two residuals with its norms' gates."""

    def __init__(self, experts: list, num_heads: int, num_kv_heads: int, head_dim: int):
        super().__init__()
        self.num_experts = len(experts)
        self.n, self.k, self.h = num_heads, num_kv_heads, head_dim
        for e, ex in enumerate(experts):
            w, f = ex["width"], ex["mlp_dim"]
            self.add_module(f"pre_attn_norm_{e}", make_norm(ex))
            self.add_module(f"q_{e}", nn.Linear(w, num_heads * head_dim, bias=False))
            self.add_module(f"k_{e}", nn.Linear(w, num_kv_heads * head_dim, bias=False))
            self.add_module(f"v_{e}", nn.Linear(w, num_kv_heads * head_dim, bias=False))
            self.add_module(f"attn_out_{e}", nn.Linear(num_heads * head_dim, w, bias=False))
            self.add_module(f"pre_mlp_norm_{e}", make_norm(ex))
            self.add_module(f"gate_{e}", nn.Linear(w, f, bias=False))
            self.add_module(f"up_{e}", nn.Linear(w, f, bias=False))
            self.add_module(f"mlp_out_{e}", nn.Linear(f, w, bias=False))

    def sub(self, name: str, e: int) -> nn.Module:
        return getattr(self, f"{name}_{e}")

    def forward(self, xs: list, positions: torch.Tensor, mask: torch.Tensor, cache: Optional[tuple],
                cond: Optional[torch.Tensor] = None):
        """xs: per expert [B, T_e, D_e] or None; positions [B, T]; mask [B, T, S + T]; cache: keys / values
        [B, S, K, h] of S earlier tokens; cond [B, D_c] for adaptive-norm experts. Returns the updated xs and
        the new tokens' (keys, values)."""
        qs, ks, vs, gates = [], [], [], []
        for e, x in enumerate(xs):
            if x is None:
                gates.append(None)
                continue
            b, t, _ = x.shape
            y, gate = run_norm(self.sub("pre_attn_norm", e), x, cond)
            gates.append(gate)
            qs.append(self.sub("q", e)(y).reshape(b, t, self.n, self.h))
            ks.append(self.sub("k", e)(y).reshape(b, t, self.k, self.h))
            vs.append(self.sub("v", e)(y).reshape(b, t, self.k, self.h))
        q = rope(torch.cat(qs, dim=1), positions)
        k = rope(torch.cat(ks, dim=1), positions)
        v = torch.cat(vs, dim=1)
        new_kv = (k, v)
        if cache is not None:
            k = torch.cat([cache[0].to(k.dtype), k], dim=1)
            v = torch.cat([cache[1].to(v.dtype), v], dim=1)
        attn = attention(q, k, v, mask)
        out, start = [], 0
        for e, x in enumerate(xs):
            if x is None:
                out.append(None)
                continue
            a = attn[:, start:start + x.shape[1]]
            start += x.shape[1]
            x = residual(x, self.sub("attn_out", e)(a), gates[e])
            y, gate = run_norm(self.sub("pre_mlp_norm", e), x, cond)
            y = gelu_tanh(self.sub("gate", e)(y)) * self.sub("up", e)(y)
            out.append(residual(x, self.sub("mlp_out", e)(y), gate))
        return out, new_kv


class Decoder(nn.Module):
    """Token embedding (tied with the output logits), the layers and one final RMSNorm per expert."""

    def __init__(self, dec: dict):
        super().__init__()
        experts = dec["experts"]
        self.width = experts[0]["width"]
        self.embedding = nn.Embedding(dec["vocab_size"], self.width)
        self.layers = nn.ModuleList(DecoderLayer(experts, dec["num_heads"], dec["num_kv_heads"], dec["head_dim"])
                                    for _ in range(dec["depth"]))
        for e, ex in enumerate(experts):
            self.add_module(f"final_norm_{e}", make_norm(ex))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens.long()) * math.sqrt(float(self.width))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """float32 logits through the tied embedding."""
        return torch.matmul(x.float(), self.embedding.weight.float().t())

    def forward(self, xs: list, positions: torch.Tensor, mask: torch.Tensor, cache: Optional[KVCache] = None,
                cond: Optional[torch.Tensor] = None):
        """xs: per expert [B, T_e, D_e] or None; cond [B, D_c]: the conditioning vector of adaptive-norm experts
        (pi0.5: the flow time). Returns final-normed outputs per expert (an adaptive norm's gate unused) and the
        new tokens' keys/values per layer."""
        new_cache = []
        for i, layer in enumerate(self.layers):
            xs, kv = layer(xs, positions, mask, None if cache is None else cache[i], cond)
            new_cache.append(kv)
        outs = [None if x is None else run_norm(getattr(self, f"final_norm_{e}"), x, cond)[0]
                for e, x in enumerate(xs)]
        return outs, new_cache


# ----------------------------------------------------------------------------------------- policy
class VLAPolicy(nn.Module):
    """The whole policy. Build with :meth:`from_pretrained` (an exported folder) or ``VLAPolicy(config)``."""

    def __init__(self, config: dict, dtype: Optional[torch.dtype] = None):
        super().__init__()
        check_config(config)
        self.config = config
        self.openpi = bool(config.get("openpi_semantics", False))  # openpi's padded dims, time embedding, Euler t
        c = config
        self.action_head = c["action_head"]
        self.compute_dtype = dtype or DTYPES[c.get("torch_dtype", "float32")]
        width = c["decoder"]["experts"][0]["width"]
        self.img = ViT({**c["vit"], "image_size": c["image_size"]})
        self.img_proj = nn.Linear(c["vit"]["width"], width)
        self.llm = Decoder(c["decoder"])
        if self.action_head == "flow":
            ew = c["decoder"]["experts"][1]["width"]
            self.action_expert = ACTION_EXPERTS[c.get("action_expert", "pi0")]
            for name, module in self.action_expert.modules(c).items():
                self.add_module(name, module)
            self.action_in_proj = nn.Linear(c["max_action_dim"], ew)
            self.action_out_proj = nn.Linear(ew, c["max_action_dim"])
        else:
            self.state_proj = nn.Linear(c["max_state_dim"], width)
        for addon in c.get("addons", ()):  # parameters under the add-on's name, as in JAX
            self.add_module(addon["name"], ADDONS[addon["name"]](c, **dict(addon["kwargs"])))
        self.addons = [getattr(self, a["name"]) for a in c.get("addons", ())]
        self.norm_stats: dict = {}
        self.to(self.compute_dtype)

    # ------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str, dtype: Optional[torch.dtype] = None, device: str = "cpu") -> "VLAPolicy":
        """Loads ``config.json`` + ``model.safetensors`` (+ ``norm_stats.json``) from an exported folder.
        ``dtype`` overrides the stored dtype (e.g. ``torch.float32`` to run a bfloat16 export in float32)."""
        from safetensors.torch import load_file

        with open(os.path.join(path, CONFIG_FILE)) as f:
            config = json.load(f)
        policy = cls(config, dtype=dtype)
        state = load_file(os.path.join(path, WEIGHTS_FILE))
        state = {k: v.to(policy.compute_dtype) for k, v in state.items()}
        missing, unexpected = policy.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}/{WEIGHTS_FILE} does not match config.json: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
        stats_file = os.path.join(path, NORM_STATS_FILE)
        if os.path.isfile(stats_file):
            with open(stats_file) as f:
                policy.norm_stats = json.load(f)
        return policy.to(device).eval().requires_grad_(False)

    # ------------------------------------------------------------------------- prefix / suffix
    def embed_prefix(self, images, image_mask, tokens, token_mask, state) -> Prefix:
        """Image tokens (+ state token, discrete head) + text tokens -> Prefix (tokens [B, P, D], mask, ar)."""
        b, cams = images.shape[0], images.shape[1]
        inputs = PrefixInputs(image_mask=image_mask, tokens=tokens, token_mask=token_mask,
                              text=self.llm.embed(tokens).to(self.compute_dtype), embed_tokens=self.llm.embed)
        x = images.reshape(-1, *images.shape[2:])
        for addon in self.addons:
            x = addon.pixels(x, inputs)
        x = self.img.embed(x)
        for addon in self.addons:
            x = addon.patch_tokens(x, inputs)
        x = self.img_proj(self.img.encode(x))
        n = x.shape[1]
        x = x.reshape(b, cams, n, x.shape[-1])
        for addon in self.addons:
            x = addon.image_tokens(x, inputs)
        parts = [x.reshape(b, cams * n, x.shape[-1])]
        masks = [image_mask[:, :, None].expand(b, cams, n).reshape(b, cams * n)]
        if self.action_head == "discrete":
            parts.append(self.state_proj(state.to(self.compute_dtype))[:, None])
            masks.append(torch.ones_like(image_mask[:, :1]))
        parts.append(inputs.text)
        masks.append(token_mask)
        mask = torch.cat(masks, dim=1)
        return Prefix(tokens=torch.cat(parts, dim=1), mask=mask, ar=torch.zeros_like(mask), extras=inputs.extras)

    def text_logits(self, out: torch.Tensor, prefix: Prefix) -> torch.Tensor:
        """Outputs [B, T, D] -> float32 logits [B, T, V] through the tied embedding and the add-ons' hooks."""
        logits = self.llm.logits(out)
        for addon in self.addons:
            logits = addon.text_logits(logits, out, prefix)
        return logits

    def encode_prefix(self, images, image_mask, tokens, token_mask, state) -> Prefix:
        """Runs the prefix alone: its KV cache, outputs, add-on extras, and the output and float32 logits
        [B, V] at the last real token."""
        prefix = self.embed_prefix(images, image_mask, tokens, token_mask, state)
        positions = torch.cumsum(prefix.mask.long(), dim=1) - 1
        xs = [prefix.tokens] + [None] * (len(self.config["decoder"]["experts"]) - 1)
        outs, prefix.cache = self.llm(xs, positions, make_attn_mask(prefix.mask, prefix.ar))
        prefix.outputs = outs[0]
        for addon in self.addons:
            prefix.extras.update(addon.prefix_outputs(prefix))
        idx = torch.arange(prefix.mask.shape[1], device=prefix.mask.device)[None]
        last = torch.where(prefix.mask, idx, torch.zeros_like(idx)).amax(dim=1)
        last_out = torch.gather(outs[0], 1, last[:, None, None].expand(-1, 1, outs[0].shape[-1]))
        prefix.last_output = last_out[:, 0]
        prefix.last_logits = self.text_logits(last_out, prefix)[:, 0]
        return prefix

    def embed_suffix(self, state: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, prefix: Prefix) -> Suffix:
        """The action expert's suffix (``action_experts.py``): tokens [B, T_s, W], ar [B, T_s], cond.
        state [B, S], x_t [B, H, A], t: scalar or [B] float32 tensor."""
        return self.action_expert.embed(self, state, x_t, t, prefix)

    def velocity(self, suffix_out: torch.Tensor) -> torch.Tensor:
        """Action-expert outputs of the suffix [B, T_s, W] -> float32 velocity [B, H, A]."""
        return self.action_out_proj(suffix_out[:, -self.config["action_horizon"]:]).float()

    def suffix_velocity(self, state, x_t, t, prefix: Prefix) -> torch.Tensor:
        """One flow step's float32 velocity [B, H, A] from the suffix, attending to the cached prefix."""
        suffix = self.embed_suffix(state, x_t, t, prefix)
        prefix_mask = prefix.mask
        b, p = prefix_mask.shape
        s = suffix.tokens.shape[1]
        s_mask = torch.ones_like(prefix_mask[:, :1]).expand(b, s)
        to_prefix = prefix_mask[:, None, :].expand(b, s, p)
        mask = torch.cat([to_prefix, make_attn_mask(s_mask, suffix.ar)], dim=2)
        positions = prefix_mask.long().sum(1, keepdim=True) + torch.cumsum(s_mask.long(), dim=1) - 1
        (_, s_out), _ = self.llm([None, suffix.tokens], positions, mask, prefix.cache, suffix.cond)
        return self.velocity(s_out)

    def full_velocity(self, state, x_t, t, prefix: Prefix) -> torch.Tensor:
        """The same velocity from one joint pass over the prefix's tokens and the suffix (no cache): the reference
        for :meth:`suffix_velocity`. ``prefix`` from :meth:`encode_prefix` (add-ons may read its outputs)."""
        suffix = self.embed_suffix(state, x_t, t, prefix)
        s_mask = torch.ones_like(suffix.ar)
        mask = torch.cat([prefix.mask, s_mask], dim=1)
        ar = torch.cat([prefix.ar, suffix.ar], dim=1)
        positions = torch.cumsum(mask.long(), dim=1) - 1
        (_, s_out), _ = self.llm([prefix.tokens, suffix.tokens], positions, make_attn_mask(mask, ar), None, suffix.cond)
        return self.velocity(s_out)

    # ------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample_actions(self, images, image_mask, tokens, token_mask, state, state_mask, action_dim_mask,
                       noise=None, num_steps: Optional[int] = None, dataset: Optional[str] = None,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Normalized actions [B, H, A] (padded dims 0, or integrated noise with ``openpi_semantics``); with
        ``dataset`` the un-normalized actions of that dataset's embodiment [B, H, action_dim] (see :meth:`unnormalize_actions`). Accepts numpy or torch.
        Flow head: ``noise`` [B, H, A] (drawn from ``generator`` when None), ``num_steps`` Euler steps
        (default: config). Discrete head: greedy decoding; ``noise`` and ``num_steps`` are ignored."""
        images, image_mask, tokens, token_mask, state, state_mask, action_dim_mask = (
            _tensor(images, torch.float32), _tensor(image_mask, torch.bool), _tensor(tokens, torch.long),
            _tensor(token_mask, torch.bool), _tensor(state, torch.float32), _tensor(state_mask, torch.bool),
            _tensor(action_dim_mask, torch.bool))
        self._check_inputs(images, image_mask, tokens, token_mask, state, state_mask, action_dim_mask)
        if self.action_head == "discrete":
            actions = self.sample_discrete(images, image_mask, tokens, token_mask, state, state_mask,
                                           action_dim_mask)
        else:
            c = self.config
            if noise is None:
                noise = torch.randn((images.shape[0], c["action_horizon"], c["max_action_dim"]),
                                    generator=generator, dtype=torch.float32)
            actions = self.sample_flow(images, image_mask, tokens, token_mask, state, state_mask, action_dim_mask,
                                       _tensor(noise, torch.float32), num_steps or c["num_flow_steps"])
        if dataset is not None:
            return torch.from_numpy(self.unnormalize_actions(actions.numpy(), dataset))
        return actions

    def sample_flow(self, images, image_mask, tokens, token_mask, state, state_mask, action_dim_mask, noise,
                    num_steps: int) -> torch.Tensor:
        """KV-cached Euler sampling from t = 1 (noise) to t = 0 (traceable: used as is by the ONNX export).
        ``openpi_semantics``: padded dims keep their noise and t is accumulated (``t = t + dt``), as in JAX."""
        state = torch.where(state_mask, state, torch.zeros_like(state))
        prefix = self.encode_prefix(images, image_mask, tokens, token_mask, state)
        dim_mask = (torch.ones_like(action_dim_mask) if self.openpi else action_dim_mask)[:, None, :]
        x_t = torch.where(dim_mask, noise.float(), torch.zeros_like(noise.float()))
        dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32)
        t_acc = torch.tensor(1.0, dtype=torch.float32)
        for i in range(num_steps):
            t = t_acc if self.openpi else 1.0 + torch.tensor(float(i), dtype=torch.float32) * dt
            v = self.suffix_velocity(state, x_t, t, prefix)
            x_t = torch.where(dim_mask, x_t + dt * v, torch.zeros_like(x_t))
            t_acc = t_acc + dt
        return x_t

    def greedy_decode(self, images, image_mask, tokens, token_mask, state, state_mask, num_tokens: int):
        """Greedy decoding of ``num_tokens`` action-bin tokens after the prefix, with a growing KV cache.
        Returns int64 tokens [B, num_tokens]."""
        vocab = self.config["decoder"]["vocab_size"]
        state = torch.where(state_mask, state, torch.zeros_like(state))
        prefix = self.encode_prefix(images, image_mask, tokens, token_mask, state)
        cache, logits = prefix.cache, prefix.last_logits
        position = prefix.mask.long().sum(1, keepdim=True)  # [B, 1]
        key_mask = prefix.mask
        out = []
        for k in range(num_tokens):
            token = vocab - NUM_BINS + torch.argmax(logits[:, -NUM_BINS:], dim=-1)
            out.append(token)
            if k == num_tokens - 1:
                break
            key_mask = torch.cat([key_mask, torch.ones_like(key_mask[:, :1])], dim=1)
            x = self.llm.embed(token[:, None]).to(self.compute_dtype)
            outs, new = self.llm([x] + [None] * (len(self.config["decoder"]["experts"]) - 1), position + k,
                                 key_mask[:, None, :], cache)
            cache = [(torch.cat([ck, nk], 1), torch.cat([cv, nv], 1)) for (ck, cv), (nk, nv) in zip(cache, new)]
            logits = self.text_logits(outs[0], prefix)[:, 0]
        return torch.stack(out, dim=1)

    def sample_discrete(self, images, image_mask, tokens, token_mask, state, state_mask, action_dim_mask):
        """Decodes H * A action tokens; the k-th one fills the k-th real (step, dim) slot (row-major)."""
        c = self.config
        h, a, vocab = c["action_horizon"], c["max_action_dim"], c["decoder"]["vocab_size"]
        out = self.greedy_decode(images, image_mask, tokens, token_mask, state, state_mask, h * a)
        bins = torch.clamp(vocab - 1 - out, 0, NUM_BINS - 1)
        values = -1.0 + (bins.float() + 0.5) * (2.0 / NUM_BINS)
        valid = action_dim_mask[:, None, :].expand(-1, h, a).reshape(-1, h * a)
        rank = torch.clamp(torch.cumsum(valid.long(), dim=1) - 1, min=0)
        flat = torch.where(valid, torch.gather(values, 1, rank), torch.zeros_like(values))
        return flat.reshape(-1, h, a)

    def _check_inputs(self, images, image_mask, tokens, token_mask, state, state_mask, action_dim_mask):
        c = self.config
        b = images.shape[0]
        r = c["image_size"]
        want = {"images": (b, c["num_cameras"], r, r, 3), "image_mask": (b, c["num_cameras"]),
                "tokens": (b, c["max_text_len"]), "token_mask": (b, c["max_text_len"]),
                "state": (b, c["max_state_dim"]), "state_mask": (b, c["max_state_dim"]),
                "action_dim_mask": (b, c["max_action_dim"])}
        got = {"images": images, "image_mask": image_mask, "tokens": tokens, "token_mask": token_mask,
               "state": state, "state_mask": state_mask, "action_dim_mask": action_dim_mask}
        for name, shape in want.items():
            if tuple(got[name].shape) != shape:
                raise ValueError(f"{name} has shape {tuple(got[name].shape)}, expected {shape} (see config.json)")

    def example_inputs(self, batch_size: int = 1) -> dict:
        """A valid observation dict (numpy, vla_jax/batch.py dtypes): gray images, every camera / state /
        action dim real, one BOS-like token. Replace the fields with real data."""
        c = self.config
        b, r = batch_size, c["image_size"]
        tokens = np.zeros((b, c["max_text_len"]), np.int32)
        token_mask = np.zeros((b, c["max_text_len"]), bool)
        tokens[:, 0], token_mask[:, 0] = 2, True
        return {"images": np.zeros((b, c["num_cameras"], r, r, 3), np.float32),
                "image_mask": np.ones((b, c["num_cameras"]), bool), "tokens": tokens, "token_mask": token_mask,
                "state": np.zeros((b, c["max_state_dim"]), np.float32),
                "state_mask": np.ones((b, c["max_state_dim"]), bool),
                "action_dim_mask": np.ones((b, c["max_action_dim"]), bool)}

    # ------------------------------------------------------------------------- normalization
    @property
    def datasets(self) -> list:
        """Names of the robot datasets with normalization stats in ``norm_stats.json``."""
        return [k for k, v in self.norm_stats.items() if isinstance(v, dict) and "action" in v]

    def _stats(self, dataset: str) -> dict:
        if dataset not in self.norm_stats or not isinstance(self.norm_stats[dataset], dict) \
                or "action" not in self.norm_stats[dataset]:
            raise KeyError(f"no normalization stats for dataset {dataset!r} in {NORM_STATS_FILE}; "
                           f"known: {self.datasets}")
        return self.norm_stats[dataset]

    def unnormalize_actions(self, actions, dataset: str) -> np.ndarray:
        """Normalized model actions [..., H, A] -> robot units [..., H, action_dim] for ``dataset``
        (the inverse of vla_jax.data.norm_stats.Normalizer: ``bounds_q99`` or ``normal``; unnormalized dims kept)."""
        st = self._stats(dataset)
        block = st["action"]
        dim = len(block["mean"])
        y = np.asarray(actions, np.float32)[..., :dim]
        return _inverse(y, block, st.get("action_normalization", "bounds_q99"), st.get("action_norm_mask"))

    def normalize_state(self, state, dataset: str) -> tuple[np.ndarray, np.ndarray]:
        """Raw robot state [..., state_dim] -> (normalized padded state [..., S], state_mask [..., S])."""
        st = self._stats(dataset)
        block = st["state"]
        method = st.get("state_normalization", "normal")
        x = np.asarray(state, np.float32)
        dim = x.shape[-1]
        mask = np.ones(dim, bool) if st.get("state_norm_mask") is None else np.asarray(st["state_norm_mask"], bool)
        if method == "bounds_q99":
            low, high = np.asarray(block["q01"], np.float32), np.asarray(block["q99"], np.float32)
            degenerate = (high - low) < _STATS_EPS
            y = np.clip(2.0 * (x - low) / np.where(degenerate, 1.0, high - low) - 1.0, -1.0, 1.0)
            y = np.where(degenerate, 0.0, y)
        elif method == "normal":
            y = (x - np.asarray(block["mean"], np.float32)) / (np.asarray(block["std"], np.float32) + _STATS_EPS)
        else:
            y = x
        y = np.where(mask, y, x).astype(np.float32)
        s = self.config["max_state_dim"]
        out = np.zeros(y.shape[:-1] + (s,), np.float32)
        out[..., :dim] = y
        smask = np.zeros(y.shape[:-1] + (s,), bool)
        smask[..., :dim] = True
        return out, smask


def _inverse(y: np.ndarray, block: dict, method: str, mask) -> np.ndarray:
    if method == "bounds_q99":
        low, high = np.asarray(block["q01"], np.float32), np.asarray(block["q99"], np.float32)
        x = (y + 1.0) / 2.0 * (high - low) + low
        x = np.where((high - low) < _STATS_EPS, low, x)
    elif method == "normal":
        x = y * (np.asarray(block["std"], np.float32) + _STATS_EPS) + np.asarray(block["mean"], np.float32)
    else:
        x = y
    mask = np.ones(y.shape[-1], bool) if mask is None else np.asarray(mask, bool)
    return np.where(mask, x, y).astype(np.float32)


def _tensor(x, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(dtype)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x))).to(dtype)
