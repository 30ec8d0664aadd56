"""SigLIP-style Vision Transformer: patch embedding, learned position embedding, pre-norm blocks.

Position embedding: learned, initialized either N(0, 0.02) (``posemb_init="normal"``, as when loading
SigLIP weights) or with the fixed 2-D sin-cos table of "Better plain ViT baselines" (``"sincos2d"``),
whose entries are as large as the patch embeddings', so a model trained from scratch knows where each
token is from the first step instead of having to grow a 50x smaller random embedding first.

The ViT patchifies whatever pixel grid it is given (``pixel_size`` x ``pixel_size`` x ``pixel_channels``,
by default the image itself) into the same (image_size / patch_size)^2 token grid, so an add-on may put
feature maps in front of it (``vla_jax/models/addons/conv_stem.py``). :meth:`ViT.embed` and
:meth:`ViT.encode` are the two halves of ``__call__``; add-ons may change the tokens between them.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from vla_jax.models.layers import Einsum, LayerNorm, constrain, maybe_remat, param


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int
    image_size: int
    posemb_init: str = "normal"  # "normal" (N(0, 0.02)) | "sincos2d" (see the module doc)
    pixel_size: int = 0  # side of the pixel grid the patch embedding reads; 0: image_size
    pixel_channels: int = 3
    dtype: str = "float32"
    remat: str = "none"
    scan: bool = True

    @property
    def grid(self) -> int:
        """Tokens per image side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid ** 2

    @property
    def pixel_patch(self) -> int:
        """Side of one patch in the pixel grid the ViT reads."""
        return (self.pixel_size or self.image_size) // self.grid


class EncoderBlock(nn.Module):
    """Pre-norm block: ``x + MHA(LN(x))`` then ``x + MLP(LN(x))`` with a GELU MLP."""

    cfg: ViTConfig

    @nn.compact
    def __call__(self, x: jax.Array, _=None) -> tuple[jax.Array, None]:
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        heads, head_dim = cfg.num_heads, cfg.width // cfg.num_heads
        y = LayerNorm(name="ln_attn")(x)
        qkv = Einsum((cfg.width, 3, heads, head_dim), ("embed", None, "heads", "head_dim"),
                     bias_axes=(None, "heads", "head_dim"), dtype=dtype, name="qkv")("btd,dknh->btknh", y)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32) * head_dim**-0.5
        probs = jax.nn.softmax(logits, axis=-1).astype(dtype)
        attn = jnp.einsum("bnts,bsnh->btnh", probs, v)
        x = x + Einsum((heads, head_dim, cfg.width), ("heads", "head_dim", "embed"), bias_axes=("embed",),
                       dtype=dtype, name="out")("btnh,nhd->btd", attn)
        y = LayerNorm(name="ln_mlp")(x)
        y = Einsum((cfg.width, cfg.mlp_dim), ("embed", "mlp"), bias_axes=("mlp",), dtype=dtype,
                   name="mlp_in")("btd,df->btf", y)
        y = nn.gelu(y, approximate=True)
        y = Einsum((cfg.mlp_dim, cfg.width), ("mlp", "embed"), bias_axes=("embed",), dtype=dtype,
                   name="mlp_out")("btf,fd->btd", y)
        x = constrain(x + y, ("activation_batch", "activation_length", "activation_embed"))
        return x, None


POSEMB_INITS = ("normal", "sincos2d")


def posemb_sincos2d(key, shape: tuple[int, int, int], dtype=jnp.float32, temperature: float = 10_000.0) -> jax.Array:
    """Initializer: [1, g * g, D] table of sin / cos of the token's row and column (D / 4 frequencies each)."""
    del key
    _, n, width = shape
    g = int(round(n**0.5))
    if g * g != n or width % 4:
        raise ValueError(f"sincos2d position embedding needs a square token grid and width % 4 == 0, got {shape}")
    y, x = jnp.mgrid[:g, :g]
    omega = 1.0 / temperature ** (jnp.arange(width // 4) / max(width // 4 - 1, 1))
    y = y.reshape(-1)[:, None] * omega[None]
    x = x.reshape(-1)[:, None] * omega[None]
    return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)[None].astype(dtype)


class ViT(nn.Module):
    """Encodes pixels [N, r, r, c] (images in [-1, 1] unless an add-on feeds feature maps) to patch tokens
    [N, (R/p)^2, width]."""

    cfg: ViTConfig

    def setup(self):
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        p = cfg.pixel_patch
        self.embedding = Einsum((p, p, cfg.pixel_channels, cfg.width), (None, None, None, "embed"),
                                bias_axes=("embed",), dtype=dtype)
        init = posemb_sincos2d if cfg.posemb_init == "sincos2d" else nn.initializers.normal(0.02)
        self.pos_embedding = param(self, "pos_embedding", init, (1, cfg.num_patches, cfg.width), (None, None, "embed"))
        block = maybe_remat(EncoderBlock, cfg.remat)
        if cfg.scan:
            self.blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                                  length=cfg.depth, metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="blocks")
        else:
            self.blocks = [block(cfg, name=f"block_{i}") for i in range(cfg.depth)]
        self.ln_final = LayerNorm()

    def embed(self, pixels: jax.Array) -> jax.Array:
        """Patch embedding + position embedding: [N, r, r, c] -> [N, (R/p)^2, width]."""
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        g, p = cfg.grid, cfg.pixel_patch
        n, ch = pixels.shape[0], pixels.shape[-1]
        patches = pixels.reshape(n, g, p, g, p, ch).transpose(0, 1, 3, 2, 4, 5).reshape(n, g * g, p, p, ch)
        x = self.embedding("btpqc,pqcd->btd", patches)
        return x + self.pos_embedding.astype(dtype)

    def encode(self, x: jax.Array) -> jax.Array:
        """Encoder blocks + final LayerNorm: [N, T, width] -> [N, T, width]."""
        if self.cfg.scan:
            x, _ = self.blocks(x, None)
        else:
            for block in self.blocks:
                x, _ = block(x, None)
        return self.ln_final(x)

    def __call__(self, pixels: jax.Array) -> jax.Array:
        return self.encode(self.embed(pixels))
