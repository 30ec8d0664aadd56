"""SigLIP-style Vision Transformer: patch embedding, learned position embedding, pre-norm blocks.

Optional early convolutions (``stem``, Xiao et al. 2021 "Early convolutions help transformers see
better"; Octo's SmallStem): k stride-2 3x3 convolutions, each followed by LayerNorm over channels
and ReLU, shrink the image by 2^k before a (patch_size / 2^k)-sized patch embedding, so the token
grid is the same as without the stem. Small ViTs trained from scratch learn local color / shape
features much sooner with a stem than with a single linear patch embedding.

Optional FiLM conditioning (``film``, Perez et al. 2018; RT-1's FiLM-EfficientNet): a conditioning
vector (the VLA passes the mean embedding of the prompt tokens) scales and shifts the channels after
every stem stage and after the patch embedding, ``x * (1 + gamma(c)) + beta(c)``, zero-initialized
(identity at the start). The instruction then selects the visual features early ("red", "cup"),
instead of the decoder having to learn the language-to-pixel binding through attention alone.
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
    stem: tuple[int, ...] = ()  # output channels of the stride-2 stem convolutions; () = plain patchify
    film: bool = False  # condition the stem stages and the patch embedding on a vector (FiLM)
    dtype: str = "float32"
    remat: str = "none"
    scan: bool = True

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


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


class FiLM(nn.Module):
    """x [N, ..., C] * (1 + gamma) + beta with gamma, beta [N, C] = cond [N, Dc] @ w [Dc, 2, C] + b [2, C]."""

    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
        gb = Einsum((cond.shape[-1], 2, x.shape[-1]), (None, None, None), bias_axes=(None, None), dtype=self.dtype,
                    init=nn.initializers.zeros, name="proj")("nd,dkc->nkc", cond)
        expand = (slice(None),) + (None,) * (x.ndim - 2)
        return x * (1.0 + gb[:, 0][expand]) + gb[:, 1][expand]


class ConvStem(nn.Module):
    """images [N, R, R, 3] (+ FiLM cond [N, Dc]) -> features [N, R / 2^k, R / 2^k, features[-1]] (k = len(features))."""

    features: tuple[int, ...]
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        dtype = jnp.dtype(self.dtype)
        for i, f in enumerate(self.features):
            w = param(self, f"conv_{i}_w", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], f), (None, None, None, None))
            b = param(self, f"conv_{i}_b", nn.initializers.zeros, (f,), (None,))
            x = jax.lax.conv_general_dilated(x.astype(dtype), w.astype(dtype), (2, 2), ((1, 1), (1, 1)),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC")) + b.astype(dtype)
            x = LayerNorm(name=f"norm_{i}")(x)
            if cond is not None:
                x = FiLM(self.dtype, name=f"film_{i}")(x, cond)
            x = nn.relu(x)
        return x


class ViT(nn.Module):
    """Encodes images [N, R, R, 3] in [-1, 1] to patch tokens [N, (R/p)^2, width] (with or without a stem).

    ``cond`` [N, Dc]: the FiLM conditioning vector, required iff ``cfg.film``.
    """

    cfg: ViTConfig

    @nn.compact
    def __call__(self, images: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        if cfg.film != (cond is not None):
            raise ValueError(f"ViT(film={cfg.film}) needs a FiLM conditioning vector exactly when film is set")
        x = ConvStem(cfg.stem, cfg.dtype, name="stem")(images, cond) if cfg.stem else images
        p = cfg.patch_size // 2 ** len(cfg.stem)
        n, r, ch = x.shape[0], x.shape[1], x.shape[-1]
        patches = x.reshape(n, r // p, p, r // p, p, ch).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(n, (r // p) ** 2, p, p, ch)
        x = Einsum((p, p, ch, cfg.width), (None, None, None, "embed"), bias_axes=("embed",), dtype=dtype,
                   name="embedding")("btpqc,pqcd->btd", patches)
        if cond is not None:
            x = FiLM(cfg.dtype, name="film")(x, cond)
        pos = param(self, "pos_embedding", nn.initializers.normal(0.02), (1, cfg.num_patches, cfg.width),
                    (None, None, "embed"))
        x = x + pos.astype(dtype)
        block = maybe_remat(EncoderBlock, cfg.remat)
        if cfg.scan:
            x, _ = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                           length=cfg.depth, metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="blocks")(x, None)
        else:
            for i in range(cfg.depth):
                x, _ = block(cfg, name=f"block_{i}")(x, None)
        return LayerNorm(name="ln_final")(x)
