"""The VLA policy, pi0: prefix, suffix, mask, loss, sample.

* Prefix: image tokens (SigLIP ViT per camera, projected to the LM width) and text tokens,
  bidirectional among themselves (web answers and discrete action tokens are causal: prefix-LM).
* Suffix (flow head): one state token, then H action tokens carrying the noisy chunk x_t and the
  flow time t; they run through the action expert while attending jointly with the prefix. How state and
  time enter is ``config.model.action_expert`` (vla_jax/models/action_expert.py): ``pi0`` as said, ``pi05``
  (pi0.5) action tokens only, the time driving adaptive RMSNorms in the expert, the state in the prompt.
* Mask: built from cumulative "autoregressive" flags, ``mask[i, j] = cumsum(ar)[j] <= cumsum(ar)[i]``,
  and padding. The prefix never sees the suffix; the state token sees the prefix and itself;
  action tokens see everything before them and each other, except text answers (a robot example's
  grounding answer is trained with the text loss but never seen by actions).
* Loss (flow): t ~ Beta(1.5, 1) * 0.999 + 0.001, x_t = t * noise + (1 - t) * actions,
  target u = noise - actions, mean squared error over real chunk steps and real action dims.
* Loss (discrete): actions -> 256 bins -> last 256 vocabulary ids, appended after the prompt,
  next-token cross-entropy. Text: next-token cross-entropy on answers (web VQA, robot grounding; both heads).
* Sample (flow): Euler from t = 1 (noise) to t = 0 in N steps; the prefix runs once into a KV
  cache, each step runs only the suffix against it.
* ``openpi_semantics`` (``config.model.openpi_semantics``): the same model computed exactly as openpi's pi0
  code computes it, so converted openpi weights reproduce openpi's numbers (vla_jax/interop/openpi.py):
  padded action dims carry noise in x_t and through every Euler step, the flow loss averages over all
  action dims, the time embedding is written ``einsum("i,j->ij", t, 1 / period * 2 pi)`` at HIGHEST
  precision, and the Euler time is accumulated in float32 (``t = t + dt`` from 1.0).

Research add-ons (``config.model.addons``, ``vla_jax/models/addons/``) plug into fixed hooks of this
model; with none it is pi0. Batch keys and shapes are defined in ``vla_jax/batch.py``.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vla_jax.batch import OBSERVATION_KEYS, check_batch
from vla_jax.models import action_tokens, addons
from vla_jax.models.action_expert import ACTION_EXPERTS
from vla_jax.models.gemma import Decoder, DecoderConfig, ExpertConfig, KVCache
from vla_jax.models.layers import Einsum
from vla_jax.models.prefix import LossTerms, Prefix, PrefixInputs, last_token
from vla_jax.models.vit import POSEMB_INITS, ViT, ViTConfig

ACTION_HEADS = ("flow", "discrete")
CORE_LOSSES = ("flow", "discrete", "text")


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
    openpi_semantics: bool = False
    action_expert: str = "pi0"
    addons: tuple[addons.AddonSpec, ...] = ()

    @property
    def num_action_tokens(self) -> int:
        return self.action_horizon * self.max_action_dim if self.action_head == "discrete" else 0

    @property
    def loss_names(self) -> tuple[str, ...]:
        """The loss terms :meth:`VLA.compute_loss` returns."""
        return (self.action_head, "text") + addons.loss_names(self)


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
    action_expert = str(model.get("action_expert", "pi0"))
    need(action_expert in ACTION_EXPERTS,
         f"config.model.action_expert={action_expert!r} must be one of {tuple(ACTION_EXPERTS)}")
    need(action_expert == "pi0" or model.action_head == "flow",
         f"config.model.action_expert={action_expert!r} needs config.model.action_head='flow'")

    experts = [ExpertConfig(model.llm.width, model.llm.mlp_dim)]
    if model.action_head == "flow":
        experts.append(ExpertConfig(model.expert.width, model.expert.mlp_dim,
                                    adaptive_norm=ACTION_EXPERTS[action_expert].ADAPTIVE_NORM))
    common = dict(dtype=model.dtype, remat=model.remat, scan=model.scan_layers)
    cfg = VLAConfig(
        vit=ViTConfig(width=model.vit.width, depth=model.vit.depth, mlp_dim=model.vit.mlp_dim,
                      num_heads=model.vit.num_heads, patch_size=model.vit.patch_size,
                      image_size=model.image_size, posemb_init=posemb_init, **common),
        decoder=DecoderConfig(experts=tuple(experts), depth=model.llm.depth, num_heads=model.llm.num_heads,
                              num_kv_heads=model.llm.num_kv_heads, head_dim=model.llm.head_dim,
                              vocab_size=model.vocab_size, **common),
        action_head=model.action_head, num_cameras=model.num_cameras, image_size=model.image_size,
        max_text_len=model.max_text_len, action_horizon=model.action_horizon,
        max_action_dim=model.max_action_dim, max_state_dim=model.max_state_dim,
        num_flow_steps=model.num_flow_steps, openpi_semantics=bool(model.get("openpi_semantics", False)),
        action_expert=action_expert, addons=addons.parse_specs(model.get("addons", ())))
    hooked = addons.implementing(cfg.addons, "suffix_state_token")
    need(not hooked or ACTION_EXPERTS[action_expert].STATE_TOKEN,
         f"config.model.addons {hooked} change the suffix's state token, which "
         f"config.model.action_expert={action_expert!r} does not have")
    return addons.configure(cfg, cfg.addons)


def make_attn_mask(mask: jax.Array, ar: jax.Array) -> jax.Array:
    """mask, ar: [B, T] -> [B, T, T] bool. Token i may attend to j iff cumsum(ar)[j] <= cumsum(ar)[i]
    and both are real tokens. ar = 1 starts a new causal block; ar = 0 joins the previous one."""
    cum = jnp.cumsum(ar.astype(jnp.int32), axis=1)
    return (cum[:, None, :] <= cum[:, :, None]) & mask[:, None, :] & mask[:, :, None]


def real_action_elements(batch: dict, all_dims: bool = False) -> jax.Array:
    """[B, H, A] bool: the action chunk entries that carry a loss (real step, real dim, robot example).
    ``all_dims``: padded action dims count too (openpi: noise stays in them)."""
    dims = jnp.ones_like(batch["action_dim_mask"]) if all_dims else batch["action_dim_mask"]
    return batch["action_step_mask"][:, :, None] & dims[:, None, :] & batch["has_actions"][:, None, None]


def action_dims(cfg: VLAConfig, action_dim_mask: jax.Array) -> jax.Array:
    """[B, 1, A] bool: the action dims the flow keeps (x_t and samples are 0 elsewhere); all dims with
    ``openpi_semantics``."""
    return (action_dim_mask | cfg.openpi_semantics)[:, None, :]


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
            self.suffix = ACTION_EXPERTS[c.action_expert](width=ew, max_state_dim=c.max_state_dim,
                                                         max_action_dim=c.max_action_dim, dtype=c.decoder.dtype,
                                                         openpi=c.openpi_semantics)
            nn.share_scope(self, self.suffix)  # its parameters keep flat names: state_proj, action_in_proj, ...
            self.action_out_proj = Einsum((ew, c.max_action_dim), ("embed", None), bias_axes=(None,), dtype=dtype)
        else:
            self.state_proj = Einsum((c.max_state_dim, width), (None, "embed"), bias_axes=("embed",), dtype=dtype)
        self.addons = tuple(spec.build(c, name=spec.name) for spec in c.addons)

    # ----------------------------------------------------------------------------- prefix
    def embed_prefix(self, obs: dict) -> Prefix:
        """Image tokens (+ state token for the discrete head) + text tokens, before the backbone runs.

        Returns a :class:`Prefix` with tokens [B, P, D], mask [B, P], ar [B, P],
        P = C * num_patches (+ 1) + L_text, and the add-ons' extras.
        """
        c = self.cfg
        images = obs["images"]
        b, cams = images.shape[:2]
        inputs = PrefixInputs(obs=obs, text=self.llm.embed(obs["tokens"]), embed_tokens=self.llm.embed)
        x = images.reshape(b * cams, *images.shape[2:])
        for addon in self.addons:
            x = addon.pixels(x, inputs)
        x = self.img.embed(x)
        for addon in self.addons:
            x = addon.patch_tokens(x, inputs)
        x = self.img_proj("bnd,de->bne", self.img.encode(x))
        n = x.shape[1]
        x = x.reshape(b, cams, n, -1)
        for addon in self.addons:
            x = addon.image_tokens(x, inputs)
        tokens = [x.reshape(b, cams * n, -1)]
        masks = [jnp.repeat(obs["image_mask"], n, axis=1)]
        if c.action_head == "discrete":
            tokens.append(self.state_proj("bs,sd->bd", obs["state"])[:, None])
            masks.append(jnp.ones((b, 1), bool))
        tokens.append(inputs.text)
        masks.append(obs["token_mask"])
        ar = jnp.zeros((b, sum(m.shape[1] for m in masks[:-1])), bool)
        ar = jnp.concatenate([ar, obs.get("token_ar", jnp.zeros_like(obs["token_mask"]))], axis=1)
        return Prefix(tokens=jnp.concatenate(tokens, axis=1), mask=jnp.concatenate(masks, axis=1), ar=ar,
                      extras=inputs.extras)

    def run_prefix(self, prefix: Prefix) -> Prefix:
        """Runs the backbone over the prefix alone: fills its K/V cache ([depth, B, P, K, h] each), outputs,
        the add-ons' extras, and the output and float32 logits at the last visible token."""
        positions = jnp.cumsum(prefix.mask, axis=1) - 1
        outs, kv = self.llm([prefix.tokens] + [None] * (len(self.cfg.decoder.experts) - 1), positions,
                            make_attn_mask(prefix.mask, prefix.ar))
        prefix = prefix.replace(kv=kv, outputs=outs[0])
        for addon in self.addons:
            prefix = prefix.replace(extras={**prefix.extras, **addon.prefix_outputs(prefix)})
        last = last_token(prefix.outputs, prefix.visible)
        return prefix.replace(last_output=last, last_logits=self.text_logits(last[:, None], prefix)[:, 0])

    def encode_prefix(self, obs: dict) -> Prefix:
        """Checks and embeds an observation and runs its prefix (:meth:`run_prefix`)."""
        check_batch(obs, self.cfg, OBSERVATION_KEYS)
        return self.run_prefix(self.embed_prefix(masked_state(obs)))

    def text_logits(self, out: jax.Array, prefix: Prefix) -> jax.Array:
        """Backbone outputs [B, T, D] -> float32 logits [B, T, vocab] through the tied embedding (and the
        add-ons' text_logits hooks)."""
        logits = self.llm.logits(out)
        for addon in self.addons:
            logits = addon.text_logits(logits, out, prefix)
        return logits

    # ----------------------------------------------------------------------------- suffix
    def embed_suffix(self, state: jax.Array, x_t: jax.Array, t: jax.Array, prefix: Prefix):
        """The suffix of ``config.model.action_expert`` (vla_jax/models/action_expert.py), the add-ons'
        ``suffix_state_token`` hooks applied to its state token (pi0).

        state [B, S], x_t [B, H, A], t [B] -> tokens [B, T, D_e], mask [B, T], ar [B, T] (T = 1 + H for pi0,
        H for pi0.5) and the adaptive norms' cond [B, D_e] (pi0.5) or None.
        """
        hook = lambda tok: functools.reduce(  # noqa: E731
            lambda x, addon: addon.suffix_state_token(x, prefix, self.addons), self.addons, tok)
        return self.suffix(state, x_t, t, hook)

    def velocity(self, suffix_out: jax.Array) -> jax.Array:
        """Action-expert outputs of the suffix [B, T, D_e] -> float32 velocity [B, H, A] (its last H tokens)."""
        v = self.action_out_proj("bhd,da->bha", suffix_out[:, -self.cfg.action_horizon:])
        return v.astype(jnp.float32)

    def suffix_velocity(self, state: jax.Array, x_t: jax.Array, t: jax.Array, prefix: Prefix) -> jax.Array:
        """One flow step's velocity [B, H, A] from the suffix alone, attending to the prefix's cached keys /
        values where it is visible; its positions continue after the prefix's visible tokens."""
        s_tok, s_mask, s_ar, cond = self.embed_suffix(state, x_t, t, prefix)
        visible = prefix.visible
        b, p = visible.shape
        to_prefix = jnp.broadcast_to(visible[:, None, :], (b, s_tok.shape[1], p))
        mask = jnp.concatenate([to_prefix, make_attn_mask(s_mask, s_ar)], axis=2)
        positions = visible.sum(axis=1, keepdims=True) + jnp.cumsum(s_mask, axis=1) - 1
        (_, s_out), _ = self.llm([None, s_tok], positions, mask, prefix.kv, cond)
        return self.velocity(s_out)

    def full_velocity(self, obs: dict, x_t: jax.Array, t: jax.Array) -> jax.Array:
        """The same velocity from one joint pass over prefix + suffix (no cache): the naive reference.
        (The prefix also runs alone first, for add-ons that read its outputs.)"""
        obs = masked_state(obs)
        prefix = self.run_prefix(self.embed_prefix(obs))
        s_tok, s_mask, s_ar, cond = self.embed_suffix(obs["state"], x_t, t, prefix)
        mask = jnp.concatenate([prefix.mask, s_mask], axis=1)
        ar = jnp.concatenate([prefix.ar, s_ar], axis=1)
        positions = jnp.cumsum(mask, axis=1) - 1
        (_, s_out), _ = self.llm([prefix.tokens, s_tok], positions, make_attn_mask(mask, ar), cond=cond)
        return self.velocity(s_out)

    # ----------------------------------------------------------------------------- losses
    def compute_loss(self, batch: dict, rng: jax.Array) -> LossTerms:
        """Per-example loss sums and element counts for each term of ``cfg.loss_names``."""
        check_batch(batch, self.cfg)
        batch = masked_state(batch)
        if self.cfg.action_head == "flow":
            return self._flow_loss(batch, rng)
        return self._discrete_loss(batch)

    def _flow_loss(self, batch: dict, rng: jax.Array) -> LossTerms:
        actions = batch["actions"]
        noise_rng, time_rng = jax.random.split(rng)
        noise = jax.random.normal(noise_rng, actions.shape, jnp.float32)
        t = jax.random.beta(time_rng, 1.5, 1.0, (actions.shape[0],)) * 0.999 + 0.001
        prefix = self.run_prefix(self.embed_prefix(batch))
        sq, elem = self.flow_errors(batch, noise, t, prefix)
        terms = {"flow": (sq.sum(axis=(1, 2)), elem.sum(axis=(1, 2)))}
        text_out = prefix.outputs[:, -batch["tokens"].shape[1]:]
        terms["text"] = self._next_token_terms(text_out, batch["tokens"], batch["token_loss"], prefix)
        return terms | self._addon_losses(batch, prefix)

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
        prefix = self.run_prefix(self.embed_prefix(inputs))
        text_out = prefix.outputs[:, -inputs["tokens"].shape[1]:]
        is_action = inputs["is_action"]
        return {
            "discrete": self._next_token_terms(text_out, inputs["tokens"], inputs["token_loss"] & is_action, prefix),
            "text": self._next_token_terms(text_out, inputs["tokens"], inputs["token_loss"] & ~is_action, prefix),
        } | self._addon_losses(batch, prefix)

    def flow_errors(self, batch: dict, noise: jax.Array, t: jax.Array,
                    prefix: Prefix | None = None) -> tuple[jax.Array, jax.Array]:
        """The flow-matching errors for given noise [B, H, A] and time t [B]: ``(v - u)^2`` where they carry a
        loss, and that float32 element mask, both [B, H, A]. ``prefix``: the batch's run prefix (else run here).
        ``batch`` has its padded state dims zeroed (:func:`masked_state`)."""
        actions = batch["actions"]
        keep = action_dims(self.cfg, batch["action_dim_mask"])
        x_t = jnp.where(keep, t[:, None, None] * noise + (1.0 - t[:, None, None]) * actions, 0.0)
        u = noise - actions
        # The prefix runs first, then the suffix against its keys / values, exactly as in sampling. The
        # suffix never sees text answers (e.g. a grounding answer) nor counts them in its positions: at
        # inference there are none.
        if prefix is None:
            prefix = self.run_prefix(self.embed_prefix(batch))
        v = self.suffix_velocity(batch["state"], x_t, t, prefix)
        elem = real_action_elements(batch, all_dims=self.cfg.openpi_semantics).astype(jnp.float32)
        return jnp.square(v - u) * elem, elem

    def _addon_losses(self, batch: dict, prefix: Prefix) -> LossTerms:
        terms: LossTerms = {}
        for addon in self.addons:
            terms |= addon.loss_terms(batch, prefix, self.addons)
        return terms

    def _next_token_terms(self, text_out: jax.Array, tokens: jax.Array, loss_mask: jax.Array, prefix: Prefix):
        """Cross-entropy of predicting tokens[:, i + 1] from text_out[:, i] where loss_mask[:, i + 1]."""
        logp = jax.nn.log_softmax(self.text_logits(text_out[:, :-1], prefix), axis=-1)
        nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
        m = loss_mask[:, 1:].astype(jnp.float32)
        return (nll * m).sum(axis=1), m.sum(axis=1)

    # ----------------------------------------------------------------------------- decoding
    def decode_step(self, token: jax.Array, position: jax.Array, mask: jax.Array,
                    kv_cache: KVCache, prefix: Prefix) -> tuple[jax.Array, KVCache]:
        """One autoregressive token. token, position [B]; mask [B, 1, S + 1]; cache [depth, B, S, K, h];
        prefix from :meth:`encode_prefix`. Returns float32 logits [B, vocab] and the token's K/V
        ([depth, B, 1, K, h] each)."""
        x = self.llm.embed(token[:, None])
        outs, kv = self.llm([x] + [None] * (len(self.cfg.decoder.experts) - 1), position[:, None], mask, kv_cache)
        return self.text_logits(outs[0], prefix)[:, 0], kv


# --------------------------------------------------------------------------------- sampling
def euler(cfg: VLAConfig, velocity, noise: jax.Array, action_dim_mask: jax.Array, num_steps: int) -> jax.Array:
    """Euler integration of ``velocity(x_t [B, H, A], t [B]) -> [B, H, A]`` from t = 1 (``noise``) to t = 0.

    Step i runs at t = 1 + i * dt, dt = -1 / num_steps (``openpi_semantics``: t accumulated in float32,
    ``t = t + dt``, as openpi does). Dims outside :func:`action_dims` stay 0."""
    dt = -1.0 / num_steps
    keep = action_dims(cfg, action_dim_mask)

    def step(i, carry):
        x_t, t_acc = carry
        t = t_acc if cfg.openpi_semantics else jnp.asarray(1.0 + i * dt, jnp.float32)
        x_t = jnp.where(keep, x_t + dt * velocity(x_t, jnp.full((x_t.shape[0],), t, jnp.float32)), 0.0)
        return x_t, t_acc + dt

    x = jnp.where(keep, noise.astype(jnp.float32), 0.0)
    return jax.lax.fori_loop(0, num_steps, step, (x, jnp.asarray(1.0, jnp.float32)))[0]


def sample_actions(model: VLA, params, obs: dict, noise: jax.Array, num_steps: int | None = None) -> jax.Array:
    """Flow-matching sampling with a prefix KV cache. noise [B, H, A] -> actions [B, H, A] (padded dims 0,
    or integrated noise with ``openpi_semantics``)."""
    prefix = model.apply(params, obs, method=VLA.encode_prefix)
    state = masked_state(obs)["state"]
    velocity = lambda x_t, t: model.apply(params, state, x_t, t, prefix, method=VLA.suffix_velocity)  # noqa: E731
    return euler(model.cfg, velocity, noise, obs["action_dim_mask"], num_steps or model.cfg.num_flow_steps)


def sample_actions_naive(model: VLA, params, obs: dict, noise: jax.Array, num_steps: int | None = None) -> jax.Array:
    """Reference sampler that re-encodes prefix + suffix at every step (same result, slower)."""
    velocity = lambda x_t, t: model.apply(params, obs, x_t, t, method=VLA.full_velocity)  # noqa: E731
    return euler(model.cfg, velocity, noise, obs["action_dim_mask"], num_steps or model.cfg.num_flow_steps)


def greedy_decode(model: VLA, params, obs: dict, num_tokens: int, actions_only: bool) -> jax.Array:
    """Greedy autoregressive decoding of ``num_tokens`` tokens after the prefix, with a KV cache.

    ``actions_only`` restricts choices to the 256 action-bin ids. Returns int32 tokens [B, num_tokens].
    """
    vocab = model.cfg.decoder.vocab_size
    prefix = model.apply(params, obs, method=VLA.encode_prefix)
    kv, prefix_mask = prefix.kv, prefix.mask
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
        lg, (nk, nv) = model.apply(params, token, first_position + k, mask, (keys, values), prefix,
                                   method=VLA.decode_step)
        keys = jax.lax.dynamic_update_slice_in_dim(keys, nk.astype(keys.dtype), p + k, axis=2)
        values = jax.lax.dynamic_update_slice_in_dim(values, nv.astype(values.dtype), p + k, axis=2)
        return out, lg, keys, values

    out = jnp.zeros((b, num_tokens), jnp.int32)
    out, *_ = jax.lax.fori_loop(0, num_tokens, step, (out, prefix.last_logits, keys, values))
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
