"""The VLA policy, pi0-style: prefix, suffix, mask, loss, sample.

* Prefix: image tokens (SigLIP ViT per camera, projected to the LM width) and text tokens,
  bidirectional among themselves (web answers and discrete action tokens are causal: prefix-LM).
* Suffix (flow head): one state token, then H action tokens carrying the noisy chunk x_t and the
  flow time t; they run through the action expert while attending jointly with the prefix. With
  ``readout`` (not in pi0; the debug preset) the state token also gets the backbone's final output at
  the last prompt token, projected: the vector the grounding answer ("where the target is") is
  decoded from, which a shallow backbone only computes in its last layer, after the expert could
  read it through attention.
* Location tokens (``location_grid`` > 0; not in pi0, the debug preset): the ``<locRC>`` tokens that name
  cells of camera 0's image (grounding answers, "where is the red cup?") are tied to that camera's image
  tokens both ways. In: each image token gets the input embedding of the cells it holds. Out: a location
  token's logit adds ``out . cell / sqrt(D)``, ``cell`` being the final output of the image token holding
  it, so answering "where" is pointing at the matching image token (a pointer network) rather than
  reading a position out of a value vector; from scratch that takes several times fewer steps
  (docs/results.md).
* Mask: built from cumulative "autoregressive" flags, ``mask[i, j] = cumsum(ar)[j] <= cumsum(ar)[i]``,
  and padding. The prefix never sees the suffix; the state token sees the prefix and itself;
  action tokens see everything before them and each other, except text answers (a robot example's
  grounding answer, "where the target is", is trained with the text loss but never seen by actions).
* Loss (flow): t ~ Beta(1.5, 1) * 0.999 + 0.001, x_t = t * noise + (1 - t) * actions,
  target u = noise - actions, mean squared error over real chunk steps and real action dims.
* Loss (discrete): actions -> 256 bins -> last 256 vocabulary ids, appended after the prompt,
  next-token cross-entropy. Text: next-token cross-entropy on answers (web VQA, robot grounding; both heads).
* Sample (flow): Euler from t = 1 (noise) to t = 0 in N steps; the prefix runs once into a KV
  cache, each step runs only the suffix against it.

Batch keys and shapes are defined in ``vla_jax/batch.py``.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vla_jax.batch import OBSERVATION_KEYS, check_batch
from vla_jax.models import action_tokens
from vla_jax.models.gemma import Decoder, DecoderConfig, ExpertConfig, KVCache
from vla_jax.models.layers import Einsum
from vla_jax.models.vit import POSEMB_INITS, ViT, ViTConfig

ACTION_HEADS = ("flow", "discrete")
LossTerms = dict[str, tuple[jax.Array, jax.Array]]  # name -> (per-example sum [B], per-example count [B])


@dataclasses.dataclass(frozen=True)
class VLAConfig:
    """Everything that fixes the architecture; built from ``config.model`` by :func:`make_config`."""

    vit: ViTConfig
    decoder: DecoderConfig
    action_head: str
    num_cameras: int
    image_size: int
    max_text_len: int
    action_horizon: int
    max_action_dim: int
    max_state_dim: int
    num_flow_steps: int
    readout: bool = False  # flow head: the backbone's output at the last prompt token joins the state token
    location_grid: int = 0  # > 0: <locRC> tokens are tied to camera 0's image tokens (in and out, see module doc)
    location_first_id: int = 0  # vocabulary id of <loc00>; <locRC> is location_first_id + R * grid + C

    @property
    def num_action_tokens(self) -> int:
        return self.action_horizon * self.max_action_dim if self.action_head == "discrete" else 0


def make_config(model: ml_collections.ConfigDict) -> VLAConfig:
    """Validates ``config.model`` and freezes it. Raises ValueError naming the bad field."""

    def need(cond: bool, msg: str):
        if not cond:
            raise ValueError(msg)

    need(model.action_head in ACTION_HEADS,
         f"config.model.action_head={model.action_head!r} must be one of {ACTION_HEADS}")
    need(model.image_size % model.vit.patch_size == 0,
         f"config.model.image_size={model.image_size} must be divisible by "
         f"config.model.vit.patch_size={model.vit.patch_size}")
    stem = tuple(int(f) for f in model.vit.get("stem", ()))
    need(model.vit.patch_size % 2 ** len(stem) == 0 and all(f >= 1 for f in stem),
         f"config.model.vit.stem={stem}: {len(stem)} stride-2 convolutions need config.model.vit.patch_size="
         f"{model.vit.patch_size} divisible by {2 ** len(stem)} and positive channel counts")
    keypoints = int(model.vit.get("keypoints", 0))
    need(keypoints >= 0 and (keypoints == 0 or len(stem) >= 2),
         f"config.model.vit.keypoints={keypoints} needs >= 2 stem convolutions (they come from the stride-4 "
         f"features; config.model.vit.stem={stem}); set keypoints=0 or add stem layers")
    posemb_init = str(model.vit.get("posemb_init", "normal"))
    need(posemb_init in POSEMB_INITS, f"config.model.vit.posemb_init={posemb_init!r} must be one of {POSEMB_INITS}")
    need(posemb_init != "sincos2d" or model.vit.width % 4 == 0,
         f"config.model.vit.posemb_init='sincos2d' needs config.model.vit.width={model.vit.width} divisible by 4")
    need(model.vit.width % model.vit.num_heads == 0,
         f"config.model.vit.width={model.vit.width} must be divisible by config.model.vit.num_heads")
    need(model.llm.num_heads % model.llm.num_kv_heads == 0,
         f"config.model.llm.num_heads={model.llm.num_heads} must be a multiple of "
         f"config.model.llm.num_kv_heads={model.llm.num_kv_heads}")
    need(model.llm.head_dim % 2 == 0, f"config.model.llm.head_dim={model.llm.head_dim} must be even (rotary)")
    need(model.vocab_size > action_tokens.NUM_BINS or model.action_head != "discrete",
         f"config.model.vocab_size={model.vocab_size} must exceed {action_tokens.NUM_BINS} for the discrete head")
    for field in ("num_cameras", "action_horizon", "max_action_dim", "max_state_dim", "max_text_len",
                  "num_flow_steps"):
        need(model[field] >= 1, f"config.model.{field}={model[field]} must be >= 1")
    need(model.dtype in ("float32", "bfloat16"), f"config.model.dtype={model.dtype!r} must be float32 or bfloat16")
    readout = bool(model.get("readout", False))
    need(not readout or model.action_head == "flow",
         "config.model.readout=True needs config.model.action_head='flow' (it feeds the action expert's state "
         "token); set config.model.readout=False")

    grid, first = int(model.get("location_grid", 0)), int(model.get("location_first_id", 0))
    need(grid >= 0 and (grid == 0 or 0 <= first and first + grid * grid <= model.vocab_size),
         f"config.model.location_grid={grid} / location_first_id={first}: the {grid * grid} location tokens must "
         f"lie inside the vocabulary (vocab_size={model.vocab_size}); set location_grid=0 to switch them off")

    experts = [ExpertConfig(model.llm.width, model.llm.mlp_dim)]
    if model.action_head == "flow":
        experts.append(ExpertConfig(model.expert.width, model.expert.mlp_dim))
    common = dict(dtype=model.dtype, remat=model.remat, scan=model.scan_layers)
    return VLAConfig(
        vit=ViTConfig(width=model.vit.width, depth=model.vit.depth, mlp_dim=model.vit.mlp_dim,
                      num_heads=model.vit.num_heads, patch_size=model.vit.patch_size,
                      image_size=model.image_size, stem=stem, posemb_init=posemb_init, keypoints=keypoints,
                      **common),
        decoder=DecoderConfig(experts=tuple(experts), depth=model.llm.depth, num_heads=model.llm.num_heads,
                              num_kv_heads=model.llm.num_kv_heads, head_dim=model.llm.head_dim,
                              vocab_size=model.vocab_size, **common),
        action_head=model.action_head, num_cameras=model.num_cameras, image_size=model.image_size,
        max_text_len=model.max_text_len, action_horizon=model.action_horizon,
        max_action_dim=model.max_action_dim, max_state_dim=model.max_state_dim,
        num_flow_steps=model.num_flow_steps, readout=readout, location_grid=grid, location_first_id=first)


def instruction_vector(text: jax.Array, prompt: jax.Array) -> jax.Array:
    """Embedded tokens [B, L, D] and the prompt's mask [B, L] (answers excluded) -> [B, D]: the mean prompt
    embedding scaled to unit RMS (float32)."""
    m = prompt.astype(jnp.float32)[..., None]
    v = (text.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
    return v * jax.lax.rsqrt(jnp.mean(v * v, axis=-1, keepdims=True) + 1e-6)


def location_weights(patch_grid: int, location_grid: int) -> np.ndarray:
    """float32 [patch_grid^2, location_grid^2]: row t averages the location cells whose centers fall in
    image token t (row-major both), so token t gets the mean embedding of "its" ``<locRC>`` tokens."""
    centers = (np.arange(location_grid) + 0.5) / location_grid
    token_of = np.minimum((centers * patch_grid).astype(int), patch_grid - 1)  # cell row / col -> token row / col
    w = np.zeros((patch_grid * patch_grid, location_grid * location_grid), np.float32)
    for r in range(location_grid):
        for c in range(location_grid):
            w[token_of[r] * patch_grid + token_of[c], r * location_grid + c] = 1.0
    return w / np.maximum(w.sum(axis=1, keepdims=True), 1.0)


def make_attn_mask(mask: jax.Array, ar: jax.Array) -> jax.Array:
    """mask, ar: [B, T] -> [B, T, T] bool. Token i may attend to j iff cumsum(ar)[j] <= cumsum(ar)[i]
    and both are real tokens. ar = 1 starts a new causal block; ar = 0 joins the previous one."""
    cum = jnp.cumsum(ar.astype(jnp.int32), axis=1)
    return (cum[:, None, :] <= cum[:, :, None]) & mask[:, None, :] & mask[:, :, None]


def last_token(x: jax.Array, mask: jax.Array) -> jax.Array:
    """x [B, T, D] at each row's last position where mask [B, T] -> [B, D]."""
    last = mask.shape[1] - 1 - jnp.argmax(mask[:, ::-1], axis=1)
    return jnp.take_along_axis(x, last[:, None, None], axis=1)[:, 0]


def posemb_sincos(t: jax.Array, dim: int, min_period: float = 4e-3, max_period: float = 4.0) -> jax.Array:
    """Sine-cosine embedding of the flow time. t: [B] -> [B, dim]."""
    fraction = jnp.linspace(0.0, 1.0, dim // 2)
    period = min_period * (max_period / min_period) ** fraction
    angle = t[:, None].astype(jnp.float32) * (2 * math.pi / period)[None, :]
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], axis=-1)


def real_action_elements(batch: dict) -> jax.Array:
    """[B, H, A] bool: the action chunk entries that carry a loss (real step, real dim, robot example)."""
    return (batch["action_step_mask"][:, :, None] & batch["action_dim_mask"][:, None, :]
            & batch["has_actions"][:, None, None])


def masked_state(obs: dict) -> dict:
    """Zeroes padded state dims so their content never reaches the model."""
    return {**obs, "state": jnp.where(obs["state_mask"], obs["state"], 0.0)}


def pack_tokens(*fields: jax.Array, valid: jax.Array) -> tuple[jax.Array, ...]:
    """Moves real tokens to the front of each row, keeping their order. fields, valid: [B, T]."""
    order = jnp.argsort(~valid, axis=1, stable=True)
    return tuple(jnp.take_along_axis(f, order, axis=1) for f in (*fields, valid))


class VLA(nn.Module):
    """The policy. Methods are applied with ``model.apply(params, ..., method=VLA.<name>)``."""

    cfg: VLAConfig

    def setup(self):
        c = self.cfg
        dtype = jnp.dtype(c.decoder.dtype)
        width = c.decoder.experts[0].width
        self.img = ViT(c.vit)
        self.img_proj = Einsum((c.vit.width, width), (None, "embed"), bias_axes=("embed",), dtype=dtype)
        self.llm = Decoder(c.decoder)
        if c.action_head == "flow":
            ew = c.decoder.experts[1].width
            self.state_proj = Einsum((c.max_state_dim, ew), (None, "embed"), bias_axes=("embed",), dtype=dtype)
            self.action_in_proj = Einsum((c.max_action_dim, ew), (None, "embed"), bias_axes=("embed",), dtype=dtype)
            self.time_mlp_in = Einsum((2 * ew, ew), (None, "embed"), bias_axes=("embed",), dtype=dtype)
            self.time_mlp_out = Einsum((ew, ew), ("embed", None), bias_axes=(None,), dtype=dtype)
            self.action_out_proj = Einsum((ew, c.max_action_dim), ("embed", None), bias_axes=(None,), dtype=dtype)
            if c.readout:
                self.readout_proj = Einsum((width, ew), (None, "embed"), bias_axes=("embed",), dtype=dtype)
                if c.vit.keypoints:
                    self.keypoint_readout = Einsum((c.num_cameras * c.vit.keypoints * 2, width), (None, "embed"),
                                                   dtype=dtype, init=nn.initializers.zeros)
        else:
            self.state_proj = Einsum((c.max_state_dim, width), (None, "embed"), bias_axes=("embed",), dtype=dtype)

    # ----------------------------------------------------------------------------- prefix
    def embed_prefix(self, obs: dict) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
        """Image tokens (+ state token for the discrete head) + text tokens.

        Returns tokens [B, P, D], mask [B, P] bool, ar [B, P] bool with
        P = C * num_patches (+ 1) + L_text, and the image keypoints [B, C, K, 2] (None without them).
        """
        c = self.cfg
        images = obs["images"]
        b, cams = images.shape[:2]
        text = self.llm.embed(obs["tokens"])
        cond = None
        if c.vit.keypoints:  # the instruction conditions the keypoints: its mean (RMS-normalized) token embedding
            prompt = obs["token_mask"] & ~obs.get("token_ar", jnp.zeros_like(obs["token_mask"]))
            cond = jnp.repeat(instruction_vector(text, prompt), cams, axis=0)
        x, points = self.img(images.reshape(b * cams, *images.shape[2:]), cond)
        if points is not None:
            points = points.reshape(b, cams, *points.shape[1:])
        x = self.img_proj("bnd,de->bne", x)
        n = x.shape[1]
        x = x.reshape(b, cams, n, -1)
        if c.location_grid:  # camera 0's tokens carry their cells' location-token embeddings (tied with the output)
            loc = self.location_embeddings()
            w = jnp.asarray(location_weights(int(round(n**0.5)), c.location_grid), loc.dtype)
            x = x.at[:, 0].add(jnp.einsum("ng,gd->nd", w, loc).astype(x.dtype))
        tokens = [x.reshape(b, cams * n, -1)]
        masks = [jnp.repeat(obs["image_mask"], n, axis=1)]
        if c.action_head == "discrete":
            tokens.append(self.state_proj("bs,sd->bd", obs["state"])[:, None])
            masks.append(jnp.ones((b, 1), bool))
        tokens.append(text)
        masks.append(obs["token_mask"])
        ar = jnp.zeros((b, sum(m.shape[1] for m in masks[:-1])), bool)
        ar = jnp.concatenate([ar, obs.get("token_ar", jnp.zeros_like(obs["token_mask"]))], axis=1)
        return jnp.concatenate(tokens, axis=1), jnp.concatenate(masks, axis=1), ar, points

    def location_embeddings(self) -> jax.Array:
        """[G^2, D] input embeddings of the location tokens <loc00> ... (row-major)."""
        first = self.cfg.location_first_id
        return self.llm.embed(jnp.arange(first, first + self.cfg.location_grid ** 2)[None])[0]

    def location_cells(self, prefix_out: jax.Array, image_mask: jax.Array) -> jax.Array | None:
        """Backbone outputs [B, P, D] of the prefix -> [B, G^2, D]: for each location cell the final output of
        the camera-0 image token that holds it (zero where camera 0 is missing); None without location tokens."""
        c = self.cfg
        if not c.location_grid:
            return None
        n = c.vit.num_patches
        held = jnp.asarray(location_weights(int(round(n**0.5)), c.location_grid) > 0, prefix_out.dtype)
        cells = jnp.einsum("ng,bnd->bgd", held, prefix_out[:, :n])
        return jnp.where(image_mask[:, :1, None], cells, 0.0)

    def text_logits(self, out: jax.Array, cells: jax.Array | None) -> jax.Array:
        """Backbone outputs [B, T, D] -> float32 logits [B, T, vocab]: the tied embedding, plus for the location
        tokens the pointer term ``out . cells / sqrt(D)`` (how well each cell's image token matches)."""
        logits = self.llm.logits(out)
        if cells is None:
            return logits
        first, g2 = self.cfg.location_first_id, self.cfg.location_grid ** 2
        pointer = jnp.einsum("btd,bgd->btg", out.astype(jnp.float32), cells.astype(jnp.float32)) * out.shape[-1] ** -0.5
        return logits.at[..., first:first + g2].add(pointer)

    def readout_vector(self, last_out: jax.Array, last_logits: jax.Array, points: jax.Array | None,
                       image_mask: jax.Array) -> jax.Array:
        """The readout [B, D]: the backbone's final output at the last prompt token, plus with location tokens
        the input embedding of the location it points at (expected under the location tokens' softmax over
        ``last_logits`` [B, vocab], that token's :meth:`text_logits`), so the action expert is told where the
        named object is in a form it does not have to decode, plus :meth:`keypoint_vector`."""
        readout = last_out
        if self.cfg.location_grid:
            first, g2 = self.cfg.location_first_id, self.cfg.location_grid ** 2
            probs = jax.nn.softmax(last_logits[:, first:first + g2], axis=-1)
            loc = self.location_embeddings()
            readout = readout + jnp.einsum("bg,gd->bd", probs.astype(loc.dtype), loc).astype(last_out.dtype)
        return readout + self.keypoint_vector(points, image_mask)

    def prefix_readout(self, prefix_out: jax.Array, mask: jax.Array, cells: jax.Array | None,
                       points: jax.Array | None, image_mask: jax.Array) -> jax.Array:
        """:meth:`readout_vector` of the prefix outputs [B, P, D] at the last token where ``mask`` [B, P]."""
        last_out = last_token(prefix_out, mask)
        return self.readout_vector(last_out, self.text_logits(last_out[:, None], cells)[:, 0], points, image_mask)

    def keypoint_vector(self, points: jax.Array | None, image_mask: jax.Array) -> jax.Array | float:
        """The keypoints [B, C, K, 2] of the present cameras (``image_mask`` [B, C]), projected to [B, D] for the
        readout (zero-initialized): the action expert gets "where the named object is" in every camera as
        coordinates, the low-dimensional input robomimic's policies get from their keypoints. 0 without them
        or without a readout."""
        if points is None or not self.cfg.readout:
            return 0.0
        flat = jnp.where(image_mask[:, :, None, None], points, 0.0).reshape(points.shape[0], -1)
        return self.keypoint_readout("bk,kd->bd", flat)

    # ----------------------------------------------------------------------------- suffix
    def embed_suffix(self, state: jax.Array, x_t: jax.Array, t: jax.Array,
                     readout: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """State token (+ the projected prefix readout [B, D], if the model has one) + H action tokens
        mixed with the time embedding by a 2-layer swish MLP.

        state [B, S], x_t [B, H, A], t [B] -> tokens [B, 1 + H, D_e], mask [B, 1 + H], ar [B, 1 + H].
        """
        b, h = x_t.shape[:2]
        state_tok = self.state_proj("bs,sd->bd", state)
        if self.cfg.readout:
            state_tok = state_tok + self.readout_proj("bd,de->be", readout.astype(state_tok.dtype))
        state_tok = state_tok[:, None]
        act = self.action_in_proj("bha,ad->bhd", x_t)
        temb = jnp.broadcast_to(posemb_sincos(t, act.shape[-1])[:, None].astype(act.dtype), act.shape)
        act = self.time_mlp_in("bhd,de->bhe", jnp.concatenate([act, temb], axis=-1))
        act = self.time_mlp_out("bhd,de->bhe", nn.swish(act))
        tokens = jnp.concatenate([state_tok, act], axis=1)
        mask = jnp.ones((b, 1 + h), bool)
        ar = jnp.zeros((b, 1 + h), bool).at[:, :2].set(True)
        return tokens, mask, ar

    def velocity(self, suffix_out: jax.Array) -> jax.Array:
        """Action-expert outputs of the suffix [B, 1 + H, D_e] -> float32 velocity [B, H, A]."""
        v = self.action_out_proj("bhd,da->bha", suffix_out[:, -self.cfg.action_horizon:])
        return v.astype(jnp.float32)

    # ----------------------------------------------------------------------------- losses
    def compute_loss(self, batch: dict, rng: jax.Array) -> LossTerms:
        """Per-example loss sums and element counts for each head ('flow' or 'discrete', and 'text'; 'keypoint'
        with keypoints and location tokens)."""
        check_batch(batch, self.cfg)
        batch = masked_state(batch)
        if self.cfg.action_head == "flow":
            return self._flow_loss(batch, rng)
        return self._discrete_loss(batch)

    def _flow_loss(self, batch: dict, rng: jax.Array) -> LossTerms:
        actions = batch["actions"]
        b = actions.shape[0]
        noise_rng, time_rng = jax.random.split(rng)
        noise = jax.random.normal(noise_rng, actions.shape, jnp.float32)
        t = jax.random.beta(time_rng, 1.5, 1.0, (b,)) * 0.999 + 0.001
        dim_mask = batch["action_dim_mask"][:, None, :]
        x_t = jnp.where(dim_mask, t[:, None, None] * noise + (1.0 - t[:, None, None]) * actions, 0.0)
        u = noise - actions

        # The prefix runs first (its final output at the last prompt token is the readout), then the
        # suffix against its keys / values, exactly as in sampling. The suffix never sees text answers
        # (e.g. a grounding answer) nor counts them in its positions: at inference there are none.
        p_tok, p_mask, p_ar, points = self.embed_prefix(batch)
        (p_out, _), kv = self.llm([p_tok, None], jnp.cumsum(p_mask, axis=1) - 1, make_attn_mask(p_mask, p_ar))
        prompt_mask = p_mask & ~p_ar
        cells = self.location_cells(p_out, batch["image_mask"])
        readout = None
        if self.cfg.readout:
            readout = self.prefix_readout(p_out, prompt_mask, cells, points, batch["image_mask"])
        s_out = self._suffix(batch["state"], x_t, t, prompt_mask, kv, readout)

        elem = real_action_elements(batch).astype(jnp.float32)
        sq = jnp.square(self.velocity(s_out) - u) * elem
        terms = {"flow": (sq.sum(axis=(1, 2)), elem.sum(axis=(1, 2)))}
        text_out = p_out[:, -batch["tokens"].shape[1]:]
        terms["text"] = self._next_token_terms(text_out, batch["tokens"], batch["token_loss"], cells)
        return terms | self._keypoint_terms(points, batch)

    def discrete_inputs(self, batch: dict) -> dict:
        """Puts action tokens right after the prompt, then the text answer (a robot example's grounding
        answer: actions are decoded right after the prompt at inference, so they never see it), and
        packs real tokens to the front.

        Returns a copy of ``batch`` with ``tokens``/``token_mask``/``token_ar``/``token_loss`` of
        length L + H * A and ``is_action`` [B, L + H * A] marking action-token positions.
        """
        act_ids = action_tokens.encode(batch["actions"], self.cfg.decoder.vocab_size).reshape(
            batch["actions"].shape[0], -1)
        act_valid = real_action_elements(batch).reshape(act_ids.shape)
        answer = batch["token_mask"] & batch["token_ar"]
        no_text = jnp.zeros_like(answer)
        tokens = jnp.concatenate([batch["tokens"], act_ids, batch["tokens"]], axis=1)
        ar = jnp.concatenate([no_text, act_valid, answer], axis=1)
        loss = jnp.concatenate([no_text, act_valid, batch["token_loss"] & answer], axis=1)
        is_action = jnp.concatenate([no_text, act_valid, no_text], axis=1)
        valid = jnp.concatenate([batch["token_mask"] & ~answer, act_valid, answer], axis=1)
        tokens, ar, loss, is_action, valid = pack_tokens(tokens, ar, loss, is_action, valid=valid)
        length = act_ids.shape[1] + batch["tokens"].shape[1]  # prompt + answer fit in L
        return {**batch, "tokens": tokens[:, :length], "token_mask": valid[:, :length], "token_ar": ar[:, :length],
                "token_loss": loss[:, :length], "is_action": is_action[:, :length]}

    def _discrete_loss(self, batch: dict) -> LossTerms:
        inputs = self.discrete_inputs(batch)
        p_tok, p_mask, p_ar, points = self.embed_prefix(inputs)
        positions = jnp.cumsum(p_mask, axis=1) - 1
        (p_out,), _ = self.llm([p_tok], positions, make_attn_mask(p_mask, p_ar))
        text_out = p_out[:, -inputs["tokens"].shape[1]:]
        is_action = inputs["is_action"]
        cells = self.location_cells(p_out, batch["image_mask"])
        return {
            "discrete": self._next_token_terms(text_out, inputs["tokens"], inputs["token_loss"] & is_action, cells),
            "text": self._next_token_terms(text_out, inputs["tokens"], inputs["token_loss"] & ~is_action, cells),
        } | self._keypoint_terms(points, batch)

    def _keypoint_terms(self, points: jax.Array | None, batch: dict) -> LossTerms:
        """{"keypoint": (sum, count) [B]} with both keypoints and location tokens, else {}: the squared distance
        of camera 0's keypoint 0 (conditioned on the prompt) from the center of the cell that the example's
        text answer names with a location token (a grounding answer). It teaches that keypoint to sit on
        the named object, so the tokens carry where it is at sub-patch precision."""
        c = self.cfg
        if points is None or not c.location_grid:
            return {}
        g, first, tokens = c.location_grid, c.location_first_id, batch["tokens"]
        is_loc = batch["token_mask"] & batch["token_ar"] & (tokens >= first) & (tokens < first + g * g)
        cell = jnp.take_along_axis(tokens, jnp.argmax(is_loc, axis=1)[:, None], axis=1)[:, 0] - first  # the first
        target = (jnp.stack([cell % g, cell // g], axis=-1).astype(jnp.float32) + 0.5) / g * 2.0 - 1.0  # (x, y)
        has = is_loc.any(axis=1) & batch["image_mask"][:, 0]
        err = jnp.square(points[:, 0, 0].astype(jnp.float32) - target).sum(-1)
        return {"keypoint": (jnp.where(has, err, 0.0), has.astype(jnp.float32))}

    def _next_token_terms(self, text_out: jax.Array, tokens: jax.Array, loss_mask: jax.Array,
                          cells: jax.Array | None):
        """Cross-entropy of predicting tokens[:, i + 1] from text_out[:, i] where loss_mask[:, i + 1]."""
        logp = jax.nn.log_softmax(self.text_logits(text_out[:, :-1], cells), axis=-1)
        nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
        m = loss_mask[:, 1:].astype(jnp.float32)
        return (nll * m).sum(axis=1), m.sum(axis=1)

    # ----------------------------------------------------------------------------- inference pieces
    def encode_prefix(self, obs: dict) -> tuple[KVCache, jax.Array, jax.Array, jax.Array, jax.Array | None]:
        """Runs the prefix alone. Returns its K/V cache ([depth, B, P, K, h] each), mask [B, P], the
        float32 logits [B, vocab] at the last real prefix token (for autoregressive decoding), that
        :meth:`readout_vector` and the location cells [B, G^2, D] (or None)."""
        check_batch(obs, self.cfg, OBSERVATION_KEYS)
        p_tok, p_mask, p_ar, points = self.embed_prefix(masked_state(obs))
        positions = jnp.cumsum(p_mask, axis=1) - 1
        outs, kv = self.llm([p_tok] + [None] * (len(self.cfg.decoder.experts) - 1), positions,
                            make_attn_mask(p_mask, p_ar))
        last_out = last_token(outs[0], p_mask)
        cells = self.location_cells(outs[0], obs["image_mask"])
        logits = self.text_logits(last_out[:, None], cells)[:, 0]
        return kv, p_mask, logits, self.readout_vector(last_out, logits, points, obs["image_mask"]), cells

    def _suffix(self, state: jax.Array, x_t: jax.Array, t: jax.Array, prefix_mask: jax.Array,
                kv_cache: KVCache, readout: jax.Array) -> jax.Array:
        """Action-expert outputs [B, 1 + H, D_e] of the suffix attending to the cached prefix keys / values
        where ``prefix_mask`` [B, P]; its positions continue after the prefix's real tokens."""
        s_tok, s_mask, s_ar = self.embed_suffix(state, x_t, t, readout)
        b, p = prefix_mask.shape
        to_prefix = jnp.broadcast_to(prefix_mask[:, None, :], (b, s_tok.shape[1], p))
        mask = jnp.concatenate([to_prefix, make_attn_mask(s_mask, s_ar)], axis=2)
        positions = prefix_mask.sum(axis=1, keepdims=True) + jnp.cumsum(s_mask, axis=1) - 1
        (_, s_out), _ = self.llm([None, s_tok], positions, mask, kv_cache)
        return s_out

    def suffix_velocity(self, state: jax.Array, x_t: jax.Array, t: jax.Array, prefix_mask: jax.Array,
                        kv_cache: KVCache, readout: jax.Array) -> jax.Array:
        """One flow step's velocity [B, H, A] from the suffix alone, attending to the cached prefix."""
        return self.velocity(self._suffix(state, x_t, t, prefix_mask, kv_cache, readout))

    def full_velocity(self, obs: dict, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """The same velocity from one joint pass over prefix + suffix (no cache): the naive reference.
        (The readout needs the prefix's output first, so the prefix also runs once on its own.)"""
        obs = masked_state(obs)
        p_tok, p_mask, p_ar, points = self.embed_prefix(obs)
        readout = None
        if self.cfg.readout:
            (p_out, _), _ = self.llm([p_tok, None], jnp.cumsum(p_mask, axis=1) - 1, make_attn_mask(p_mask, p_ar))
            readout = self.prefix_readout(p_out, p_mask, self.location_cells(p_out, obs["image_mask"]), points,
                                          obs["image_mask"])
        s_tok, s_mask, s_ar = self.embed_suffix(obs["state"], x_t, t, readout)
        mask = jnp.concatenate([p_mask, s_mask], axis=1)
        ar = jnp.concatenate([p_ar, s_ar], axis=1)
        positions = jnp.cumsum(mask, axis=1) - 1
        (_, s_out), _ = self.llm([p_tok, s_tok], positions, make_attn_mask(mask, ar))
        return self.velocity(s_out)

    def decode_step(self, token: jax.Array, position: jax.Array, mask: jax.Array,
                    kv_cache: KVCache, cells: jax.Array | None) -> tuple[jax.Array, KVCache]:
        """One autoregressive token. token, position [B]; mask [B, 1, S + 1]; cache [depth, B, S, K, h];
        cells from :meth:`encode_prefix`. Returns float32 logits [B, vocab] and the token's K/V
        ([depth, B, 1, K, h] each)."""
        x = self.llm.embed(token[:, None])
        outs, kv = self.llm([x] + [None] * (len(self.cfg.decoder.experts) - 1), position[:, None], mask, kv_cache)
        return self.text_logits(outs[0], cells)[:, 0], kv


# --------------------------------------------------------------------------------- sampling
def sample_actions(model: VLA, params, obs: dict, noise: jax.Array, num_steps: int | None = None) -> jax.Array:
    """Flow-matching sampling with a prefix KV cache. noise [B, H, A] -> actions [B, H, A] (padded dims 0)."""
    num_steps = num_steps or model.cfg.num_flow_steps
    kv, prefix_mask, _, readout, _ = model.apply(params, obs, method=VLA.encode_prefix)
    dt = -1.0 / num_steps

    def step(i, x_t):
        t = jnp.full((x_t.shape[0],), 1.0 + i * dt, jnp.float32)
        v = model.apply(params, state, x_t, t, prefix_mask, kv, readout, method=VLA.suffix_velocity)
        return jnp.where(dim_mask, x_t + dt * v, 0.0)

    dim_mask = obs["action_dim_mask"][:, None, :]
    state = masked_state(obs)["state"]
    return jax.lax.fori_loop(0, num_steps, step, jnp.where(dim_mask, noise.astype(jnp.float32), 0.0))


def sample_actions_naive(model: VLA, params, obs: dict, noise: jax.Array, num_steps: int | None = None) -> jax.Array:
    """Reference sampler that re-encodes prefix + suffix at every step (same result, slower)."""
    num_steps = num_steps or model.cfg.num_flow_steps
    dt = -1.0 / num_steps

    def step(i, x_t):
        t = jnp.full((x_t.shape[0],), 1.0 + i * dt, jnp.float32)
        return jnp.where(dim_mask, x_t + dt * model.apply(params, obs, x_t, t, method=VLA.full_velocity), 0.0)

    dim_mask = obs["action_dim_mask"][:, None, :]
    return jax.lax.fori_loop(0, num_steps, step, jnp.where(dim_mask, noise.astype(jnp.float32), 0.0))


def greedy_decode(model: VLA, params, obs: dict, num_tokens: int, actions_only: bool) -> jax.Array:
    """Greedy autoregressive decoding of ``num_tokens`` tokens after the prefix, with a KV cache.

    ``actions_only`` restricts choices to the 256 action-bin ids. Returns int32 tokens [B, num_tokens].
    """
    vocab = model.cfg.decoder.vocab_size
    kv, prefix_mask, logits, _, cells = model.apply(params, obs, method=VLA.encode_prefix)
    b, p = prefix_mask.shape
    keys = jnp.concatenate([kv[0], jnp.zeros(kv[0].shape[:2] + (num_tokens,) + kv[0].shape[3:], kv[0].dtype)], 2)
    values = jnp.concatenate([kv[1], jnp.zeros_like(keys[:, :, p:])], 2)
    first_position = prefix_mask.sum(axis=1)

    def choose(lg):
        if actions_only:
            return (vocab - action_tokens.NUM_BINS + jnp.argmax(lg[:, -action_tokens.NUM_BINS:], -1)).astype(jnp.int32)
        return jnp.argmax(lg, axis=-1).astype(jnp.int32)

    def step(k, carry):
        out, lg, keys, values = carry
        token = choose(lg)
        out = out.at[:, k].set(token)
        generated = jnp.broadcast_to(jnp.arange(num_tokens)[None] < k, (b, num_tokens))
        mask = jnp.concatenate([prefix_mask, generated, jnp.ones((b, 1), bool)], axis=1)[:, None]
        lg, (nk, nv) = model.apply(params, token, first_position + k, mask, (keys, values), cells,
                                   method=VLA.decode_step)
        keys = jax.lax.dynamic_update_slice_in_dim(keys, nk.astype(keys.dtype), p + k, axis=2)
        values = jax.lax.dynamic_update_slice_in_dim(values, nv.astype(values.dtype), p + k, axis=2)
        return out, lg, keys, values

    out = jnp.zeros((b, num_tokens), jnp.int32)
    out, *_ = jax.lax.fori_loop(0, num_tokens, step, (out, logits, keys, values))
    return out


def sample_actions_discrete(model: VLA, params, obs: dict) -> jax.Array:
    """Decodes H * (real action dims) action tokens and maps them back to actions [B, H, A] in [-1, 1]."""
    c = model.cfg
    b = obs["tokens"].shape[0]
    tokens = greedy_decode(model, params, obs, c.num_action_tokens, actions_only=True)
    valid = jnp.broadcast_to(obs["action_dim_mask"][:, None, :], (b, c.action_horizon, c.max_action_dim))
    valid = valid.reshape(b, -1)
    order = jnp.argsort(~valid, axis=1, stable=True)  # k-th generated token -> flat (step, dim) slot
    values = action_tokens.decode(tokens, c.decoder.vocab_size) * jnp.take_along_axis(valid, order, axis=1)
    flat = jnp.zeros((b, c.num_action_tokens), jnp.float32).at[jnp.arange(b)[:, None], order].set(values)
    return flat.reshape(b, c.action_horizon, c.max_action_dim)


def sample(model: VLA, params, obs: dict, rng: jax.Array) -> jax.Array:
    """The policy's action chunk [B, H, A] (normalized units) with whichever head the model has."""
    if model.cfg.action_head == "discrete":
        return sample_actions_discrete(model, params, obs)
    c = model.cfg
    noise = jax.random.normal(rng, (obs["state"].shape[0], c.action_horizon, c.max_action_dim), jnp.float32)
    return sample_actions(model, params, obs, noise)
