"""AdamW with warmup + cosine decay, global-norm clipping, a weight-decay mask, freezing and
gradient accumulation, all from ``config.optimizer``.

Parameters are matched by their path without the leading ``params/``, e.g. ``img/blocks/qkv/w``,
``llm/layers/q_0/w``, ``llm/embedding``. Regexes use ``re.search``.

Chain (per update): [frozen params -> zero update] ; clip by global norm (trainable grads only)
-> Adam moments -> decoupled weight decay (masked) -> * -lr(step). With
``grad_accum_steps = k > 1`` the whole thing is wrapped in ``optax.MultiSteps``: each train step
is a micro step and the parameters change every k-th step with the mean of the k gradients.
"""

from __future__ import annotations

import re

import jax
import optax

from vla_jax.train.sharding import path_str


class OptimizerError(ValueError):
    """Bad ``config.optimizer`` field; one line naming it."""


def param_name(path) -> str:
    name = path_str(path)
    return name[len("params/"):] if name.startswith("params/") else name


def make_schedule(opt, num_updates: int) -> optax.Schedule:
    """Linear warmup from 0 to ``lr``, then cosine to ``lr * end_lr_factor`` (or constant)."""
    warmup = int(opt.warmup_steps)
    if opt.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=opt.lr, warmup_steps=warmup,
            decay_steps=max(num_updates, warmup + 1), end_value=opt.lr * opt.end_lr_factor)
    if opt.schedule == "constant":
        return optax.join_schedules(
            [optax.linear_schedule(0.0, opt.lr, max(warmup, 1)), optax.constant_schedule(opt.lr)], [warmup])
    raise OptimizerError(f"config.optimizer.schedule={opt.schedule!r} must be 'cosine' or 'constant'")


def _compile(patterns, field: str) -> list[re.Pattern]:
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in (patterns or ())):
        raise OptimizerError(f"config.optimizer.{field}={patterns!r} must be a tuple of regex strings, "
                             f"e.g. (r'^img/',)")
    out = []
    for p in patterns or ():
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise OptimizerError(f"config.optimizer.{field}: bad regex {p!r} ({e})") from None
    return out


def decay_mask(params, exclude_patterns) -> object:
    """True where weight decay applies: every parameter whose name matches none of the patterns."""
    pats = _compile(exclude_patterns, "decay_exclude")
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any(p.search(param_name(path)) for p in pats), params)


def freeze_labels(params, freeze_patterns) -> object:
    """'frozen' for parameters whose name matches a freeze regex, else 'train'."""
    pats = _compile(freeze_patterns, "freeze")
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if any(p.search(param_name(path)) for p in pats) else "train", params)


def make_optimizer(opt, num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Returns ``(tx, schedule)``; ``schedule(update_count)`` is the learning rate.

    ``num_steps`` counts train (micro) steps; the schedule runs over ``num_steps // grad_accum_steps``
    parameter updates.
    """
    k = int(opt.grad_accum_steps)
    if k < 1:
        raise OptimizerError(f"config.optimizer.grad_accum_steps={k} must be >= 1")
    if opt.lr < 0 or opt.clip_norm is not None and opt.clip_norm < 0:
        raise OptimizerError("config.optimizer.lr and config.optimizer.clip_norm must be >= 0")
    schedule = make_schedule(opt, max(num_steps // k, 1))
    parts = []
    if opt.clip_norm:
        parts.append(optax.clip_by_global_norm(opt.clip_norm))
    parts.append(optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps))
    if opt.weight_decay:
        parts.append(optax.add_decayed_weights(opt.weight_decay,
                                               mask=lambda p: decay_mask(p, opt.decay_exclude)))
    parts.append(optax.scale_by_learning_rate(schedule))
    tx = optax.chain(*parts)
    if opt.freeze:
        _compile(opt.freeze, "freeze")
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                                   lambda p: freeze_labels(p, opt.freeze))
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k).gradient_transformation()
    return tx, schedule


def trainable_count(params, freeze_patterns) -> tuple[int, int]:
    """(trainable, total) parameter counts under the freeze regexes."""
    labels = jax.tree_util.tree_leaves(freeze_labels(params, freeze_patterns))
    sizes = [int(x.size) for x in jax.tree_util.tree_leaves(params)]
    return sum(s for s, l in zip(sizes, labels) if l == "train"), sum(sizes)
