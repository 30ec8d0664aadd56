"""Numerical parity of the exported policy: the same inputs through JAX, PyTorch and onnxruntime.

Inputs: random images, a real tokenized instruction when a tokenizer is available (else random ids),
a random state, fixed noise. The figure is the max abs difference of the sampled actions (normalized
units) against the JAX ``vla.sample_actions`` / ``vla.sample_actions_discrete`` reference run in float32.
For a bfloat16 export two more figures: PyTorch-bf16 vs the JAX float32 reference (what deployment in
bf16 costs) and PyTorch-bf16 vs JAX run in bf16 (implementation agreement at that precision).

NaN-safe: a non-finite action from any runtime (the JAX references included) raises ParityError at once,
and a non-finite difference fails :func:`check` whatever the tolerance (a NaN never compares greater than it).

openpi fixtures (``vla_jax/interop/openpi.py``, ``tools/check_parity.py --backend=torch|onnx``):
:func:`fixture_outputs` runs a fixture's inputs through the PyTorch policy or onnxruntime and returns the
counterparts of openpi's recorded outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from vla_jax.export import to_onnx
from vla_jax.export import torch_port as tp
from vla_jax.models import vla

if TYPE_CHECKING:
    from vla_jax.interop.openpi import Fixture

OBS_KEYS = ("images", "image_mask", "tokens", "token_mask", "state", "state_mask", "action_dim_mask")
DEFAULT_INSTRUCTION = "pick up the red block and place it in the bowl"
TOLERANCE_F32 = 1e-4
GATED = ("torch_f32", "onnx_f32")  # figures held to the tolerance
DIFFERENCES = GATED + ("torch_bf16_vs_jax_f32", "torch_bf16_vs_jax_bf16")  # figures that must be finite


class ParityError(ValueError):
    """The exported model does not reproduce the JAX actions within the tolerance; one line."""


def make_inputs(cfg, batch_size: int, seed: int, tokenizer_path: str | None = None,
                instruction: str = DEFAULT_INSTRUCTION) -> dict[str, np.ndarray]:
    """Observation (batch.py format) + ``noise``; ``cfg`` is a VLAConfig or a config.json dict."""
    get = (lambda k: cfg[k]) if isinstance(cfg, dict) else (lambda k: getattr(cfg, k))
    vocab = cfg["decoder"]["vocab_size"] if isinstance(cfg, dict) else cfg.decoder.vocab_size
    rng = np.random.default_rng(seed)
    b, c, r = batch_size, get("num_cameras"), get("image_size")
    l, s, h, a = get("max_text_len"), get("max_state_dim"), get("action_horizon"), get("max_action_dim")
    image_mask = rng.random((b, c)) < 0.7
    image_mask[:, 0] = True
    tokens = np.zeros((b, l), np.int32)
    token_mask = np.zeros((b, l), bool)
    ids = None
    if tokenizer_path:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
        ids = ([sp.bos_id()] if sp.bos_id() >= 0 else []) + sp.encode(instruction)
        ids = [i for i in ids if 0 <= i < vocab][:l]
    for i in range(b):
        row = ids if ids is not None else list(rng.integers(1, min(200, vocab), int(rng.integers(3, max(4, l // 2)))))
        tokens[i, :len(row)] = row
        token_mask[i, :len(row)] = True
    dims = rng.integers(max(1, a // 2), a + 1, b)
    sdims = np.minimum(dims + 1, s)
    return {
        "images": rng.uniform(-1, 1, (b, c, r, r, 3)).astype(np.float32),
        "image_mask": image_mask,
        "tokens": tokens,
        "token_mask": token_mask,
        "state": rng.standard_normal((b, s)).astype(np.float32),
        "state_mask": np.arange(s)[None] < sdims[:, None],
        "action_dim_mask": np.arange(a)[None] < dims[:, None],
        "noise": rng.standard_normal((b, h, a)).astype(np.float32),
    }


# ----------------------------------------------------------------------------------------- runners
def with_dtype(cfg, dtype: str):
    """The same VLAConfig computing in ``dtype`` (the parity reference runs the JAX model in float32)."""
    return dataclasses.replace(cfg, vit=dataclasses.replace(cfg.vit, dtype=dtype),
                               decoder=dataclasses.replace(cfg.decoder, dtype=dtype))


@functools.lru_cache(maxsize=8)
def _jax_sampler(cfg, num_steps: int):
    model = vla.VLA(cfg)
    if cfg.action_head == "flow":
        return jax.jit(lambda p, o, n: vla.sample_actions(model, p, o, n, num_steps))
    return jax.jit(lambda p, o, n: vla.sample_actions_discrete(model, p, o))


def jax_actions(cfg, params, inputs: dict, num_steps: int | None = None, dtype: str = "float32") -> np.ndarray:
    """Reference actions from the JAX model (``params``: {"params": ...}, numpy or jax arrays)."""
    cfg = with_dtype(cfg, dtype)
    fn = _jax_sampler(cfg, int(num_steps or cfg.num_flow_steps))
    obs = {k: inputs[k] for k in OBS_KEYS}
    return np.asarray(fn(params, obs, inputs["noise"]), np.float32)


def jax_prefix_logits(cfg, params, inputs: dict) -> np.ndarray:
    """float32 logits [B, vocab] at the last real prefix token (what greedy decoding starts from)."""
    model = vla.VLA(with_dtype(cfg, "float32"))
    obs = {k: inputs[k] for k in OBS_KEYS}
    fn = jax.jit(lambda p, o: model.apply(p, o, method=vla.VLA.encode_prefix).last_logits)
    return np.asarray(fn(params, obs), np.float32)


def torch_actions(policy: tp.VLAPolicy, inputs: dict, num_steps: int | None = None) -> np.ndarray:
    return policy.sample_actions(**{k: inputs[k] for k in OBS_KEYS}, noise=inputs["noise"],
                                 num_steps=num_steps).float().numpy()


def onnx_actions(session, inputs: dict) -> np.ndarray:
    return to_onnx.run_onnx(session, inputs)


# ----------------------------------------------------------------------------------------- measure
def measure(cfg, params, *, torch_policy: tp.VLAPolicy | None = None, onnx_session=None,
            bf16_policy: tp.VLAPolicy | None = None, num_steps: int | None = None,
            tokenizer_path: str | None = None, seeds=(0, 1), batch_sizes=(2,)) -> dict:
    """Max abs action differences vs the JAX float32 reference over ``seeds`` x ``batch_sizes``.

    Returns {"torch_f32": x, "onnx_f32": x, "torch_bf16_vs_jax_f32": x, "torch_bf16_vs_jax_bf16": x,
    "max_abs_action": x, "cases": n, "tokenizer": bool} (keys present for what was given). ParityError (one line)
    as soon as a runtime's actions hold a non-finite value."""
    out: dict = {"cases": 0, "tokenizer": bool(tokenizer_path), "num_steps": int(num_steps or cfg.num_flow_steps)}

    def worst(key: str, value: float) -> None:  # np.maximum keeps a NaN (the builtin max may drop it)
        out[key] = float(np.maximum(out.get(key, 0.0), value))

    for seed in seeds:
        for b in batch_sizes:
            inputs = make_inputs(cfg, b, seed, tokenizer_path)
            case = f"seed {seed}, batch {b}"
            ref = finite_actions("the JAX float32 reference", jax_actions(cfg, params, inputs, num_steps), case)
            worst("max_abs_action", np.abs(ref).max())
            figures = {}
            if torch_policy is not None:
                figures["torch_f32"] = finite_actions("PyTorch float32", torch_actions(torch_policy, inputs, num_steps),
                                                      case)
            if onnx_session is not None:
                figures["onnx_f32"] = finite_actions("onnxruntime float32", onnx_actions(onnx_session, inputs), case)
            if bf16_policy is not None:
                bf = finite_actions("PyTorch bfloat16", torch_actions(bf16_policy, inputs, num_steps), case)
                figures["torch_bf16_vs_jax_f32"] = bf
                ref16 = finite_actions("the JAX bfloat16 reference", jax_actions(
                    cfg, _bf16_params(params), inputs, num_steps, dtype="bfloat16"), case)
                worst("torch_bf16_vs_jax_bf16", np.abs(bf - ref16).max())
            for name, actions in figures.items():
                worst(name, np.abs(actions - ref).max())
            out["cases"] += 1
    return out


def finite_actions(what: str, actions: np.ndarray, case: str) -> np.ndarray:
    """``actions``, or ParityError naming ``what`` produced non-finite values (and how many) in ``case``."""
    bad = int(actions.size - np.count_nonzero(np.isfinite(actions)))
    if bad:
        raise ParityError(f"parity check failed: {what} actions have {bad} non-finite values of {actions.size} "
                          f"({case}); the folder was not written")
    return actions


def _bf16_params(params):
    """The float32 params rounded to bfloat16 (what the bf16 export stores), back in float32."""
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.bfloat16).astype(jnp.float32), params)


def check(figures: dict, tolerance: float = TOLERANCE_F32) -> None:
    """Raises ParityError (one line) if a difference figure is not finite or a float32 one (:data:`GATED`)
    exceeds ``tolerance``."""
    nonfinite = {k: figures[k] for k in DIFFERENCES if k in figures and not np.isfinite(figures[k])}
    if nonfinite:
        desc = ", ".join(f"{k}={v}" for k, v in nonfinite.items())
        raise ParityError(f"parity check failed: max abs action difference vs JAX {desc} is not finite; "
                          "the folder was not written")
    bad = {k: figures[k] for k in GATED if k in figures and not figures[k] <= tolerance}
    if bad:
        desc = ", ".join(f"{k}={v:.2e}" for k, v in bad.items())
        raise ParityError(f"parity check failed: max abs action difference vs JAX {desc} > {tolerance:.0e} "
                          "(float32); the folder was not written")


# ----------------------------------------------------------------------------------------- openpi fixtures
BACKENDS = ("torch", "onnx")
PROBE_INPUTS = ("images", "image_mask", "tokens", "token_mask", "state", "x_t", "t", "loss_x_t", "loss_t")
PROBE_OUTPUTS = ("prefix_tokens", "prefix_mask", "velocity", "velocity_cached", "suffix_tokens", "suffix_ar_mask",
                 "loss_velocity", "adarms_cond")


class FixtureProbe(nn.Module):
    """The flow policy's intermediate outputs, traced as is for onnxruntime: images [B, C, R, R, 3], image_mask
    [B, C], tokens [B, L], token_mask [B, L], state [B, S] (padded dims zeroed), x_t [B, H, A], t [B], loss_x_t
    [B, H, A], loss_t [B] -> :func:`probe_outputs`: prefix tokens [B, P, D], prefix mask [B, P], float32 velocity
    [B, H, A] at (x_t, t) from one joint pass over prefix + suffix and through the prefix KV cache, suffix tokens
    [B, T_s, W] and causal-block flags [B, T_s] at (x_t, t), the cached velocity at (loss_x_t, loss_t) and
    (adaptive norms, pi0.5) the conditioning vector [B, W] at t."""

    def __init__(self, policy: tp.VLAPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, images, image_mask, tokens, token_mask, state, x_t, t, loss_x_t, loss_t):
        p = self.policy
        prefix = p.encode_prefix(images, image_mask, tokens, token_mask, state)
        suffix = p.embed_suffix(state, x_t, t, prefix)
        outs = (prefix.tokens, prefix.mask, p.full_velocity(state, x_t, t, prefix),
                p.suffix_velocity(state, x_t, t, prefix), suffix.tokens, suffix.ar,
                p.suffix_velocity(state, loss_x_t, loss_t, prefix))
        return outs if suffix.cond is None else (*outs, suffix.cond)


def probe_outputs(policy: tp.VLAPolicy) -> list[str]:
    """The names of :class:`FixtureProbe`'s outputs for ``policy`` (``adarms_cond`` with adaptive norms)."""
    return list(PROBE_OUTPUTS if policy.action_expert.adaptive_norm else PROBE_OUTPUTS[:-1])


def fixture_outputs(policy: tp.VLAPolicy, batch: dict, fixture: "Fixture", backend: str) -> dict[str, np.ndarray]:
    """The PyTorch (``backend="torch"``) or onnxruntime (``"onnx"``) counterparts of an openpi fixture's outputs,
    as ``vla_jax.interop.openpi.model_outputs`` gives JAX's: prefix_tokens / prefix_mask; velocity (one joint pass)
    and velocity_cached (prefix KV cache), suffix_tokens, suffix_ar_mask [T_s] and (pi0.5) adarms_cond at
    ``in/x_t``, ``in/t``; loss [B, H]: openpi's mean over all action dims of ``(v - u)^2`` from the cached velocity
    at the fixture's ``loss_noise`` / ``loss_time`` (the port has no loss of its own); sampled [B, H, A] from
    ``in/noise`` (torch: ``sample_actions``; onnx: the exported ``policy.onnx``). ``policy``: float32,
    ``openpi_semantics`` on; ``batch``: :meth:`Fixture.batch`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    obs = {k: batch[k] for k in OBS_KEYS}
    obs["state"] = np.where(obs["state_mask"], obs["state"], 0.0).astype(np.float32)
    x, y, actions = fixture.inputs, fixture.outputs, batch["actions"]
    loss_t = y.get("loss_time", x["t"]).astype(np.float32)
    noise = y.get("loss_noise", x["x_t"])
    tt = loss_t[:, None, None]
    inputs = {**{k: np.asarray(obs[k]).astype(to_onnx.INPUT_DTYPES[k]) for k in PROBE_INPUTS[:5]},
              "x_t": x["x_t"].astype(np.float32), "t": x["t"].astype(np.float32),
              "loss_x_t": (tt * noise + (1.0 - tt) * actions).astype(np.float32), "loss_t": loss_t}
    with tempfile.TemporaryDirectory() as tmp:
        out = _run_probe(policy, inputs, backend, tmp)
        out["sampled"] = _sampled(policy, obs, x["noise"], backend, tmp)
    v = out.pop("loss_velocity")
    if "loss_noise" in y:
        out["loss"] = np.square(v - (noise - actions)).mean(axis=-1)
    out["suffix_ar_mask"] = out["suffix_ar_mask"][0]
    if "adarms_cond" not in y:
        out.pop("adarms_cond", None)
    order = ("prefix_tokens", "prefix_mask", "velocity", "velocity_cached", "suffix_tokens", "suffix_ar_mask",
             "adarms_cond", "loss", "sampled")  # model_outputs' order
    return {k: out[k] for k in order if k in out}


def _run_probe(policy: tp.VLAPolicy, inputs: dict[str, np.ndarray], backend: str, tmp: str) -> dict[str, np.ndarray]:
    """:class:`FixtureProbe` on ``inputs`` (:data:`PROBE_INPUTS`, numpy) in PyTorch, or traced into ``tmp`` and
    run by onnxruntime. Returns :func:`probe_outputs` by name."""
    graph, names = FixtureProbe(policy), probe_outputs(policy)
    if backend == "onnx":
        session = to_onnx.onnx_session(to_onnx.trace(graph, inputs, names, os.path.join(tmp, "probe.onnx")))
        used = {i.name for i in session.get_inputs()}  # trace() drops inputs a model ignores (pi0.5: state)
        return dict(zip(names, session.run(names, {k: v for k, v in inputs.items() if k in used})))
    with torch.no_grad():
        outs = graph(*(torch.from_numpy(v) for v in inputs.values()))
    return {name: o.numpy() for name, o in zip(names, outs)}


def _sampled(policy: tp.VLAPolicy, obs: dict, noise: np.ndarray, backend: str, tmp: str) -> np.ndarray:
    """Actions sampled from ``noise`` by ``policy.sample_actions`` or the exported ``policy.onnx`` (written to
    ``tmp``), the config's number of Euler steps."""
    if backend == "torch":
        return torch_actions(policy, {**obs, "noise": noise})
    session = to_onnx.onnx_session(to_onnx.export_onnx(policy, os.path.join(tmp, to_onnx.ONNX_FILE)))
    return onnx_actions(session, {**obs, "noise": noise})
