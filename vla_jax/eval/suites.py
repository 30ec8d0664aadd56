"""Evaluation suites: which simulator, embodiments, tasks and splits the closed-loop harness runs.

``tabletop`` is the built-in numpy world (vla_jax.sim); ``metaworld_mt50`` / ``metaworld_mt10`` are
Meta-World's MT50 / MT10 task sets (vla_jax.sim.metaworld; MuJoCo is imported on the first env only).
A suite's env has the TabletopEnv interface: ``reset(task, seed) -> obs``, ``step(action) -> obs``,
``success()``, ``failure_kind()``, ``num_steps``, ``close()``, ``expert(noise, seed)`` (a scripted expert with
``act() -> [action_dim]``) and ``action_bounds() -> (low, high, gripper mask)`` [action_dim] each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from vla_jax.sim import EMBODIMENTS, FAMILIES, SPLITS, TabletopEnv, sample_task
from vla_jax.sim.metaworld import tasks as mw_tasks


@dataclass(frozen=True)
class Suite:
    """``make_env(embodiment, image_size)``; ``sample_task(rng, family, split)`` -> task with ``.instruction``;
    ``dataset_specs``: {embodiment: spec of its demonstrations} (which dataset of a run's config a model
    is un-normalized with); ``image_size``: rendered resolution (None: the model's); ``groups``: {family:
    difficulty group} where the suite reports by group; ``grounding``: whether the first-frame grounding
    probe applies; ``group_by_task``: queue a task's episodes back to back (envs that are slow to switch
    tasks keep theirs); ``renders_blind``: envs made with ``image_size=0`` render nothing, which the harness
    uses for policies that read no images (``uses_images = False``) and record no frames."""

    name: str
    embodiments: tuple[str, ...]
    families: tuple[str, ...]
    splits: tuple[str, ...]
    make_env: Callable[[str, int], object]
    sample_task: Callable[[np.random.Generator, str, str], object]
    action_dims: dict[str, int]
    max_episode_steps: dict[str, int]
    dataset_specs: dict[str, str]
    image_size: int | None
    groups: dict[str, str] | None = None
    grounding: bool = False
    group_by_task: bool = False
    renders_blind: bool = False


def _metaworld_env(embodiment: str, image_size: int):
    from vla_jax.sim.metaworld.env import MetaWorldEnv

    return MetaWorldEnv(embodiment, image_size)


METAWORLD_MAX_STEPS = 200  # the scripted expert needs 77 steps on average (docs/results.md)


def _metaworld(name: str) -> Suite:
    return Suite(name=name, embodiments=("sawyer",), families=mw_tasks.TASK_SETS[name], splits=mw_tasks.SPLITS,
                 make_env=_metaworld_env, sample_task=mw_tasks.sample_task, action_dims={"sawyer": 4},
                 max_episode_steps={"sawyer": METAWORLD_MAX_STEPS}, dataset_specs={"sawyer": "metaworld"},
                 image_size=None, groups={t: mw_tasks.group_of(t) for t in mw_tasks.TASK_SETS[name]},
                 group_by_task=True, renders_blind=True)


SUITES: dict[str, Suite] = {
    "tabletop": Suite(name="tabletop", embodiments=tuple(EMBODIMENTS), families=FAMILIES, splits=SPLITS,
                      make_env=TabletopEnv, sample_task=sample_task,
                      action_dims={e: s.action_dim for e, s in EMBODIMENTS.items()},
                      max_episode_steps={e: s.max_episode_steps for e, s in EMBODIMENTS.items()},
                      dataset_specs={"single_arm": "tabletop_single_arm", "bimanual": "tabletop_bimanual"},
                      image_size=96, grounding=True),
    **{name: _metaworld(name) for name in mw_tasks.TASK_SETS},
}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown evaluation suite {name!r}; choose from {', '.join(SUITES)}")
    return SUITES[name]
