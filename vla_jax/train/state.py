"""TrainState and its creation directly in sharded form.

The parameter tree is never materialised on one device: ``jax.eval_shape`` gives the boxed
(logically named) abstract tree, the rules turn it into NamedShardings, and the init function is
jitted with those as ``out_shardings`` so every device only ever allocates its own shard.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vla_jax.models.summary import dummy_batch
from vla_jax.models.vla import VLA
from vla_jax.train import sharding as sh


@flax.struct.dataclass
class TrainState:
    """``params`` and ``ema_params`` are model variables (``{"params": ...}``) ready for ``model.apply``;
    ``ema_params`` is None when EMA is off. ``rng`` is raw uint32 key data (checkpoint friendly);
    the step's randomness is ``fold_in(rng, step)`` so it never depends on how a run was split."""

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array


def _zeros_batch(model: VLA) -> dict:
    return {k: jnp.zeros(v.shape, v.dtype) for k, v in dummy_batch(model.cfg, 1).items()}


def make_init_fn(model: VLA, tx: optax.GradientTransformation, seed: int, use_ema: bool,
                 boxed: bool = False) -> Callable[[], TrainState]:
    """``init() -> TrainState``; with ``boxed=True`` params keep their logical-axis boxes (for eval_shape)."""

    def init() -> TrainState:
        params_rng, step_rng = jax.random.split(jax.random.key(seed))
        variables = model.init(params_rng, _zeros_batch(model), params_rng, method=VLA.compute_loss)
        unboxed = nn.unbox(variables)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=variables if boxed else unboxed,
            opt_state=tx.init(unboxed),
            ema_params=(jax.tree.map(jnp.copy, unboxed) if use_ema else None),
            rng=jax.random.key_data(step_rng),
        )

    return init


def state_shardings(model: VLA, tx, mesh, rules, seed: int = 0, use_ema: bool = True):
    """Returns ``(abstract_state, shardings)``: ShapeDtypeStruct tree (unboxed) and NamedSharding tree."""
    boxed = jax.eval_shape(make_init_fn(model, tx, seed, use_ema, boxed=True))
    param_sh = sh.logical_to_shardings(boxed.params, mesh, rules)
    abstract = boxed.replace(params=nn.unbox(boxed.params))
    index = sh.param_path_index(abstract.params, param_sh)
    rep = sh.replicated(mesh)
    shardings = TrainState(
        step=rep,
        params=param_sh,
        opt_state=sh.shardings_like(abstract.opt_state, index, mesh),
        ema_params=param_sh if use_ema else None,
        rng=rep,
    )
    return abstract, shardings


def with_shardings(abstract, shardings):
    """Attaches shardings to an abstract tree (restore targets, AOT lowering)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def create_train_state(model: VLA, tx, mesh, rules, seed: int, use_ema: bool,
                       param_overrides: dict[str, np.ndarray] | None = None):
    """Initialises a TrainState directly sharded. ``param_overrides`` ({'params/img/...': array})
    replaces initial values (e.g. loaded PaliGemma weights) before the EMA copy is taken.

    Returns ``(state, shardings)``.
    """
    abstract, shardings = state_shardings(model, tx, mesh, rules, seed, use_ema)
    init = make_init_fn(model, tx, seed, use_ema)
    if not param_overrides:
        return jax.jit(init, out_shardings=shardings)(), shardings

    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract.params)
    flat_sh = jax.tree_util.tree_leaves(shardings.params)
    names = [sh.path_str(p) for p, _ in flat]
    given = {}
    for name, (_, leaf), s in zip(names, flat, flat_sh):
        if name in param_overrides:
            value = np.asarray(param_overrides[name], dtype=leaf.dtype)
            assert value.shape == leaf.shape, (name, value.shape, leaf.shape)
            given[name] = jax.make_array_from_callback(leaf.shape, s, lambda idx, v=value: v[idx])

    def init_with(given):
        state = init()
        leaves = jax.tree_util.tree_leaves(state.params)
        leaves = [given.get(n, x) for n, x in zip(names, leaves)]
        params = jax.tree_util.tree_unflatten(treedef, leaves)
        ema = jax.tree.map(jnp.copy, params) if use_ema else None
        return state.replace(params=params, ema_params=ema)

    state = jax.jit(init_with, out_shardings=shardings)(given)
    return state, shardings

