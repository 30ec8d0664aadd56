"""SigLIP-style Vision Transformer: patch embedding, learned position embedding, pre-norm blocks.

Optional early convolutions (``stem``, Xiao et al. 2021 "Early convolutions help transformers see
better"; Octo's SmallStem): k stride-2 3x3 convolutions, each followed by LayerNorm over channels
and ReLU, shrink the image by 2^k before a (patch_size / 2^k)-sized patch embedding, so the token
grid is the same as without the stem. Small ViTs trained from scratch learn local color / shape
features much sooner with a stem than with a single linear patch embedding.

Position embedding: learned, initialized either N(0, 0.02) (``posemb_init="normal"``, as when loading
SigLIP weights) or with the fixed 2-D sin-cos table of "Better plain ViT baselines" (``"sincos2d"``),
whose entries are as large as the patch embeddings', so a model trained from scratch knows where each
token is from the first step instead of having to grow a 50x smaller random embedding first.

Optional spatial-softmax keypoints (``keypoints`` = K > 0; Levine et al. 2016 "End-to-end training of
deep visuomotor policies", robomimic's and Diffusion Policy's image encoders): a 3x3 convolution of the
stem's stride-4 feature map gives K heat maps; the softmax over positions of each gives its expected
(x, y) in [-1, 1]. With a conditioning vector ``cond`` [N, E] (the VLA passes the instruction's mean
token embedding) each heat map also gets ``sum_c feature_c * q_ck(cond)``, a per-image 1x1 filter
computed from the instruction (FiLM-like, as RT-1 conditions its image encoder), so a keypoint can be
"where the named object is". The 2K coordinates, projected to the width, are added to every token of
the image. ``q`` and the projection start at zero, so a model loaded without them starts unchanged.
A token stands for a 16 x 16 pixel patch; the keypoints say where inside it a color or shape is, at the
sub-patch precision a grasp needs.
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
    posemb_init: str = "normal"  # "normal" (N(0, 0.02)) | "sincos2d" (see the module doc)
    keypoints: int = 0  # spatial-softmax keypoints from the stem's stride-4 features (needs >= 2 stem convs)
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


def _conv3x3(module: nn.Module, name: str, x: jax.Array, features: int, stride: int, dtype) -> jax.Array:
    """3x3 convolution with padding 1: [N, H, W, C] -> [N, H / stride, W / stride, features]."""
    w = param(module, f"{name}_w", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], features), (None,) * 4)
    b = param(module, f"{name}_b", nn.initializers.zeros, (features,), (None,))
    return jax.lax.conv_general_dilated(x.astype(dtype), w.astype(dtype), (stride, stride), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + b.astype(dtype)


def spatial_softmax(heat: jax.Array) -> jax.Array:
    """heat maps [N, H, W, K] -> expected (x, y) of each map's softmax over positions, [N, K, 2] in [-1, 1]."""
    n, h, w, k = heat.shape
    probs = jax.nn.softmax(heat.astype(jnp.float32).reshape(n, h * w, k), axis=1).reshape(n, h, w, k)
    xs, ys = jnp.linspace(-1.0, 1.0, w), jnp.linspace(-1.0, 1.0, h)
    return jnp.stack([jnp.einsum("nhwk,w->nk", probs, xs), jnp.einsum("nhwk,h->nk", probs, ys)], axis=-1)


class ConvStem(nn.Module):
    """images [N, R, R, 3] -> (features [N, R / 2^k, R / 2^k, features[-1]] (k = len(features)),
    keypoints [N, K, 2] or None)."""

    features: tuple[int, ...]
    keypoints: int = 0
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        """x [N, R, R, 3]; cond [N, E] or None (conditions the keypoint heat maps)."""
        dtype = jnp.dtype(self.dtype)
        points = None
        for i, f in enumerate(self.features):
            x = nn.relu(LayerNorm(name=f"norm_{i}")(_conv3x3(self, f"conv_{i}", x, f, 2, dtype)))
            if i == 1 and self.keypoints:
                heat = _conv3x3(self, "keypoint_conv", x, self.keypoints, 1, dtype)
                if cond is not None:
                    q = param(self, "keypoint_query", nn.initializers.zeros,
                              (cond.shape[-1], x.shape[-1], self.keypoints), ("embed", None, None))
                    filters = jnp.einsum("ne,eck->nck", cond.astype(dtype), q.astype(dtype))
                    heat = heat + jnp.einsum("nhwc,nck->nhwk", x, filters)
                points = spatial_softmax(heat)
        return x, points


class ViT(nn.Module):
    """Encodes images [N, R, R, 3] in [-1, 1] to (patch tokens [N, (R/p)^2, width] (with or without a stem),
    keypoints [N, K, 2] in [-1, 1] or None); ``cond`` [N, E] conditions the keypoints (see the module doc)."""

    cfg: ViTConfig

    @nn.compact
    def __call__(self, images: jax.Array, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
        cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
        points = None
        x = images
        if cfg.stem:
            x, points = ConvStem(cfg.stem, cfg.keypoints, cfg.dtype, name="stem")(images, cond)
        p = cfg.patch_size // 2 ** len(cfg.stem)
        n, r, ch = x.shape[0], x.shape[1], x.shape[-1]
        patches = x.reshape(n, r // p, p, r // p, p, ch).transpose(0, 1, 3, 2, 4, 5)
        patches = patches.reshape(n, (r // p) ** 2, p, p, ch)
        x = Einsum((p, p, ch, cfg.width), (None, None, None, "embed"), bias_axes=("embed",), dtype=dtype,
                   name="embedding")("btpqc,pqcd->btd", patches)
        init = posemb_sincos2d if cfg.posemb_init == "sincos2d" else nn.initializers.normal(0.02)
        pos = param(self, "pos_embedding", init, (1, cfg.num_patches, cfg.width),
                    (None, None, "embed"))
        x = x + pos.astype(dtype)
        if points is not None:
            kp = Einsum((cfg.keypoints * 2, cfg.width), (None, "embed"), bias_axes=("embed",), dtype=dtype,
                        init=nn.initializers.zeros, name="keypoint_proj")("nk,kd->nd", points.reshape(n, -1))
            x = x + kp[:, None, :]
        block = maybe_remat(EncoderBlock, cfg.remat)
        if cfg.scan:
            x, _ = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                           length=cfg.depth, metadata_params={nn.PARTITION_NAME: "layers"})(cfg, name="blocks")(x, None)
        else:
            for i in range(cfg.depth):
                x, _ = block(cfg, name=f"block_{i}")(x, None)
        return LayerNorm(name="ln_final")(x), points
