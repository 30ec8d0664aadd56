"""The jitted train step: loss, gradients, optimizer update, EMA, metrics, non-finite guard.

The guard: a step whose loss, gradient norm, updated parameters or updated EMA parameters hold a
non-finite value is not applied (params, optimizer state and EMA keep their previous values, picked
with one ``jnp.where`` per leaf after a per-leaf all-finite reduction, so it shards like the state),
and ``metrics["finite/<quantity>"]`` says which quantity failed; the loop stops on it
(:func:`nonfinite_quantity`).

Loss = sum over heads of ``loss_weights[head] * (sum of per-example sums / sum of counts)``, heads
being ``flow`` or ``discrete`` plus ``text`` (see ``VLA.compute_loss``). Per-data-source losses use
segment sums over ``batch["source"]`` with the same (sum / count) definition.

The step is compiled ahead of time (``compile_train_step``) inside the mesh + logical-rules
context so the model's activation constraints apply; the state argument is donated.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vla_jax.models.vla import VLA
from vla_jax.train.state import TrainState


def make_loss_fn(model: VLA, loss_weights: dict[str, float], num_sources: int) -> Callable:
    """``loss_fn(params, batch, rng) -> (loss, aux)``; aux holds per-head means and per-source
    ``[num_sources]`` vectors ``source_loss/<head>`` (NaN-free: 0 where a source has no elements)
    and ``source_count/<head>``."""

    def loss_fn(params, batch, rng):
        terms = model.apply(params, batch, rng, method=VLA.compute_loss)
        loss = jnp.zeros((), jnp.float32)
        aux = {}
        for name, (sums, counts) in sorted(terms.items()):
            sums, counts = sums.astype(jnp.float32), counts.astype(jnp.float32)
            mean = sums.sum() / jnp.maximum(counts.sum(), 1.0)
            weight = float(loss_weights.get(name, 1.0))
            if weight:
                loss = loss + weight * mean
            aux[f"loss/{name}"] = mean
            seg_sum = jax.ops.segment_sum(sums, batch["source"], num_segments=num_sources)
            seg_cnt = jax.ops.segment_sum(counts, batch["source"], num_segments=num_sources)
            aux[f"source_loss/{name}"] = seg_sum / jnp.maximum(seg_cnt, 1.0)
            aux[f"source_count/{name}"] = seg_cnt
        return loss, aux

    return loss_fn


# The guarded quantities, in the order a non-finite value propagates: metrics key suffix -> name in messages.
GUARDED = {"loss": "loss", "grad_norm": "gradient norm", "params": "parameters", "ema_params": "EMA parameters"}


def all_finite(tree: Any) -> jax.Array:
    """Scalar bool: every element of every leaf of ``tree`` is finite (True for an empty tree or None).

    One all-reduction per leaf, then a scalar AND: sharded leaves reduce locally plus one scalar collective."""
    return functools.reduce(jnp.logical_and, [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)], jnp.bool_(True))


def nonfinite_quantity(metrics: dict) -> str | None:
    """The first quantity of :data:`GUARDED` that a step's (host) metrics flag as non-finite, by its message name
    (``"gradient norm"``, ...); None when the step was applied."""
    return next((name for key, name in GUARDED.items() if not bool(metrics[f"finite/{key}"])), None)


def step_rng(state: TrainState) -> jax.Array:
    return jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)


def make_train_step(model: VLA, tx: optax.GradientTransformation, schedule: optax.Schedule, *,
                    loss_weights: dict[str, float], num_sources: int, ema_decay: float | None,
                    grad_accum_steps: int = 1) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """The un-jitted step ``(state, batch) -> (state, metrics)``.

    If the loss, the gradient norm, the updated params or the updated EMA hold a non-finite value,
    params / opt_state / EMA are left unchanged and ``metrics["finite/<quantity>"]`` (one bool per
    quantity in :data:`GUARDED`) records which, so a NaN never reaches a checkpoint; the loop then stops.
    """
    loss_fn = make_loss_fn(model, loss_weights, num_sources)

    def train_step(state: TrainState, batch: dict):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, step_rng(state))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params
        if ema is not None:
            d = jnp.float32(ema_decay)
            new_ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)
            if grad_accum_steps > 1:  # only average real parameter updates
                applied = (state.step + 1) % grad_accum_steps == 0
                new_ema = jax.tree.map(lambda n, o: jnp.where(applied, n, o), new_ema, ema)
            ema = new_ema
        grad_norm = optax.tree.norm(grads)
        checks = {"loss": jnp.isfinite(loss), "grad_norm": jnp.isfinite(grad_norm), "params": all_finite(params),
                  "ema_params": all_finite(ema)}
        finite = functools.reduce(jnp.logical_and, checks.values())
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        new_state = TrainState(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            ema_params=None if ema is None else keep(ema, state.ema_params),
            rng=state.rng,
        )
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "param_norm": optax.tree.norm(state.params),
            "update_norm": optax.tree.norm(updates),
            "lr": jnp.asarray(schedule(state.step // grad_accum_steps), jnp.float32),
            **{f"finite/{name}": ok for name, ok in checks.items()},
            **aux,
        }
        return new_state, metrics

    return train_step


@contextlib.contextmanager
def sharding_context(mesh, rules):
    """Mesh + logical-axis rules in effect while tracing (activation constraints need both)."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield


def compile_train_step(train_step, state_abstract: Any, state_shardings: Any, batch_abstract: dict,
                       batch_sharding, mesh, rules):
    """AOT-compiles the step with explicit in/out shardings and a donated state.

    ``state_abstract`` / ``batch_abstract``: ShapeDtypeStruct trees (global shapes).
    Returns the compiled executable (call it as ``compiled(state, batch)``).
    """
    batch_sh = {k: batch_sharding for k in batch_abstract}
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    jitted = jax.jit(train_step, in_shardings=(state_shardings, batch_sh),
                     out_shardings=(state_shardings, replicated), donate_argnums=(0,))
    with sharding_context(mesh, rules):
        return jitted.lower(state_abstract, batch_abstract).compile()


def compiled_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled executable from XLA's cost analysis (None if unavailable)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - backends without cost analysis
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])
