"""Batched closed-loop evaluation in a simulator suite (vla_jax/eval/suites.py: the tabletop world, Meta-World).

For each embodiment, ``num_envs`` environments run side by side; every chunk boundary, ONE policy
call returns an action chunk for all running envs, of which the first ``execute_steps`` actions are
executed (receding horizon). An env whose episode ended idles until the next chunk boundary and
then starts the next queued episode, so the batch stays full.

Episode i of cell (embodiment, family, split) uses seed :func:`episode_seed` (fixed by ``seed``
and the names, disjoint in practice from the data generator's seeds < 10^8): the task is
``sample_task(default_rng(s), family, split)`` and the scene ``env.reset(task, s)``. The harness
itself is deterministic, so a deterministic policy gives identical results on every run.

An episode ends ``hold_steps`` steps after it first succeeds (0: at once), when the target fell
off the table (cannot succeed any more), or after ``max_steps`` steps. It counts as a success if
the task is achieved at its end. A failed episode's kind is ``env.failure_kind()`` at the end
(wrong_object, dropped, off_table, wrong_container, lifted, wrong_direction) or "timeout" when no
mistake is visible.
"""

from __future__ import annotations

import dataclasses
import json
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from vla_jax.eval.success_stats import CellStats, aggregate, summarize
from vla_jax.eval.suites import get_suite
from vla_jax.progress import Progress
from vla_jax.sim import EMBODIMENTS, FAMILIES, SPLITS

_TERMINAL_FAILURES = ("off_table",)


def episode_seed(seed: int, embodiment: str, family: str, split: str, index: int) -> int:
    """Seed of episode ``index`` of a cell: a 62-bit hash of (seed, names, index)."""
    name = zlib.crc32(f"{embodiment}/{family}/{split}".encode())
    state = np.random.SeedSequence([0xE7A1, int(seed), name, int(index)]).generate_state(2, np.uint32)
    return int(state[0]) << 30 | int(state[1]) >> 2


@dataclass
class EpisodeResult:
    embodiment: str
    family: str
    split: str
    index: int
    seed: int
    instruction: str
    success: bool
    steps: int  # env steps taken
    failure: str | None  # None on success
    success_step: int | None = None  # steps taken when the task was first achieved

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Rollout:
    """A recorded episode: ``frames[t]`` = {camera: uint8 [R, R, 3]} seen after t steps (t = 0..steps)."""

    episode: EpisodeResult
    frames: list[dict]


@dataclass
class Results:
    """Outcome of :func:`evaluate`. Equality compares policy, settings and episodes (not timing)."""

    policy: str
    settings: dict
    episodes: list[EpisodeResult]
    timing: dict = field(default_factory=dict, compare=False)
    rollouts: list[Rollout] = field(default_factory=list, compare=False, repr=False)

    # ---- aggregation
    def cells(self) -> dict[tuple[str, str, str], CellStats]:
        """{(embodiment, family, split): CellStats}."""
        return aggregate(self.episodes, ("embodiment", "family", "split"))

    def by_split(self) -> dict[str, CellStats]:
        return {k[0]: v for k, v in aggregate(self.episodes, ("split",)).items()}

    def by_embodiment(self) -> dict[tuple[str, str], CellStats]:
        """{(embodiment, split): CellStats}."""
        return aggregate(self.episodes, ("embodiment", "split"))

    def overall(self) -> CellStats:
        return summarize(self.episodes)

    def success_rate(self, embodiment: str | None = None, family: str | None = None, split: str | None = None) -> float:
        chosen = [e for e in self.episodes if embodiment in (None, e.embodiment) and family in (None, e.family)
                  and split in (None, e.split)]
        if not chosen:
            raise KeyError(f"no episodes for embodiment={embodiment} family={family} split={split}")
        return sum(e.success for e in chosen) / len(chosen)

    # ---- serialization
    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "settings": self.settings,
            "overall": self.overall().to_dict(),
            "by_split": {k: v.to_dict() for k, v in self.by_split().items()},
            "by_embodiment": [{"embodiment": e, "split": s, **v.to_dict()} for (e, s), v in self.by_embodiment().items()],
            "cells": [{"embodiment": e, "family": f, "split": s, **v.to_dict()} for (e, f, s), v in self.cells().items()],
            "timing": self.timing,
            "episodes": [e.to_dict() for e in self.episodes],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Results":
        """Inverse of :meth:`to_dict` (aggregates are recomputed from the episodes)."""
        return cls(d["policy"], dict(d["settings"]), [EpisodeResult(**e) for e in d["episodes"]], dict(d.get("timing", {})))

    def to_json(self, path: str) -> str:
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        return path

    @classmethod
    def from_json(cls, path: str) -> "Results":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    # ---- display
    def summary_table(self) -> str:
        """Markdown table: one row per (embodiment, family, split) plus per-split totals."""
        head = (f"**{self.policy}**: success rate with 95% Wilson interval\n\n"
                "| embodiment | family | split | n | success [95% CI] | mean len | failures |\n"
                "|---|---|---|---:|---|---:|---|\n")
        rows = []

        def row(e, f, s, c: CellStats):
            fails = ", ".join(f"{k} {v}" for k, v in sorted(c.failures.items(), key=lambda kv: -kv[1])) or "-"
            rows.append(f"| {e} | {f} | {s} | {c.n} | {c.format_rate()} | {c.mean_length:.1f} | {fails} |")

        for (e, f, s), c in sorted(self.cells().items(), key=lambda kv: _order(kv[0])):
            row(e, f, s, c)
        for s, c in self.by_split().items():
            row("**all**", "**all**", s, c)
        return head + "\n".join(rows) + "\n"


def _order(key: tuple[str, str, str]) -> tuple:
    e, f, s = key
    rank = lambda seq, x: seq.index(x) if x in seq else len(seq)  # noqa: E731
    return rank(list(EMBODIMENTS), e), e, rank(list(FAMILIES), f), f, rank(list(SPLITS), s), s


@dataclass
class _Slot:
    env: object  # the suite's env (vla_jax/eval/suites.py)
    spec: tuple | None = None  # (family, split, index, seed)
    episode_id: int = -1
    instruction: str = ""
    obs: dict | None = None
    success_step: int | None = None
    done: bool = True
    result: EpisodeResult | None = None
    frames: list | None = None


def _episode_order(families, splits):
    return lambda e: (e.index, list(splits).index(e.split), list(families).index(e.family))


def _check_chunk(chunk, n: int, action_dim: int, policy_name: str) -> np.ndarray:
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.ndim == 2:
        chunk = chunk[:, None]
    if chunk.ndim != 3 or chunk.shape[0] != n or chunk.shape[2] != action_dim or chunk.shape[1] < 1:
        raise ValueError(f"policy '{policy_name}' returned actions of shape {chunk.shape}; expected "
                         f"[{n}, H, {action_dim}] (H >= 1)")
    if not np.all(np.isfinite(chunk)):
        raise ValueError(f"policy '{policy_name}' returned non-finite actions")
    return chunk


def evaluate(
    policy,
    *,
    suite: str = "tabletop",
    embodiments: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    episodes_per_cell: int = 20,
    split: str | Sequence[str] = "train",
    seed: int = 0,
    execute_steps: int | None = None,
    max_steps: int | None = None,
    num_envs: int = 16,
    image_size: int = 96,
    hold_steps: int = 0,
    record: int = 0,
    progress: bool = False,
) -> Results:
    """Evaluates ``policy`` (vla_jax.eval.agents.Policy) on every embodiment x family x split cell of
    ``suite`` (vla_jax/eval/suites.py; embodiments / families None: all of the suite's).

    split: one split or several (e.g. vla_jax.sim.SPLITS). execute_steps: actions executed per chunk
    (None: the whole chunk). max_steps: episode step limit (None: the embodiment's
    max_episode_steps). record: episodes per cell (the first ones) whose camera frames are kept in
    ``Results.rollouts`` for filmstrips. See the module doc for seeds and episode ends.
    """
    sim = get_suite(suite)
    embodiments = sim.embodiments if embodiments is None else tuple(embodiments)
    families = sim.families if families is None else tuple(families)
    splits = (split,) if isinstance(split, str) else tuple(split)
    for kind, names, allowed in (("split", splits, sim.splits), ("task family", families, sim.families),
                                 ("embodiment", embodiments, sim.embodiments)):
        for n in names:
            if n not in allowed:
                raise ValueError(f"unknown {kind} {n!r} of suite {suite}; choose from {allowed}")
    if execute_steps is not None and execute_steps < 1:
        raise ValueError("execute_steps must be >= 1 or None")
    name = getattr(policy, "name", type(policy).__name__)
    settings = dict(suite=suite, embodiments=list(embodiments), families=list(families), splits=list(splits),
                    episodes_per_cell=episodes_per_cell, seed=seed, execute_steps=execute_steps,
                    max_steps=max_steps, image_size=image_size, hold_steps=hold_steps)
    timing = dict(policy_s=0.0, env_s=0.0, policy_calls=0, env_steps=0, episodes=0)
    episodes: list[EpisodeResult] = []
    rollouts: list[Rollout] = []
    start = time.perf_counter()
    bar = Progress(f"eval {name}", len(embodiments) * len(families) * len(splits) * episodes_per_cell,
                   unit="episodes", enabled=progress)
    for embodiment in embodiments:
        action_dim = sim.action_dims[embodiment]
        limit = max_steps or sim.max_episode_steps[embodiment]
        order = (((f, s, i) for f in families for s in splits for i in range(episodes_per_cell)) if sim.group_by_task
                 else ((f, s, i) for i in range(episodes_per_cell) for s in splits for f in families))
        queue = deque((f, s, i, episode_seed(seed, embodiment, f, s, i)) for f, s, i in order)
        blind = sim.renders_blind and record == 0 and not getattr(policy, "uses_images", True)
        slots = [_Slot(sim.make_env(embodiment, 0 if blind else image_size)) for _ in range(min(num_envs, len(queue)))]
        policy.reset(len(slots))
        finished: list[EpisodeResult] = []
        next_id = 0

        def start_episode(k: int, slot: _Slot) -> None:
            nonlocal next_id
            family, s, index, eseed = slot.spec = queue.popleft()
            task = sim.sample_task(np.random.default_rng(eseed), family, s)
            t0 = time.perf_counter()
            slot.obs = slot.env.reset(task, eseed)
            timing["env_s"] += time.perf_counter() - t0
            slot.instruction, slot.success_step, slot.done, slot.result = task.instruction, None, False, None
            slot.episode_id, next_id = next_id, next_id + 1
            slot.frames = [slot.obs["images"]] if index < record else None
            if hasattr(policy, "begin_episode"):
                policy.begin_episode(k, slot.env, eseed)

        def finish(slot: _Slot) -> None:
            family, s, index, eseed = slot.spec
            success = slot.env.success()
            failure = None if success else (slot.env.failure_kind() or "timeout")
            slot.result = EpisodeResult(embodiment, family, s, index, eseed, slot.instruction, bool(success),
                                        slot.env.num_steps, failure, slot.success_step)
            slot.done = True
            finished.append(slot.result)
            if slot.frames is not None:
                rollouts.append(Rollout(slot.result, slot.frames))
            bar.update(1)

        for k, slot in enumerate(slots):
            start_episode(k, slot)
        while True:
            live = [k for k, slot in enumerate(slots) if not slot.done]
            if not live:
                break
            observations = [
                {**slots[k].obs, "meta": {"slot": k, "episode_id": slots[k].episode_id, "step": slots[k].env.num_steps,
                                          "seed": slots[k].spec[3], "family": slots[k].spec[0], "split": slots[k].spec[1]}}
                for k in live
            ]
            t0 = time.perf_counter()
            chunk = policy.act(observations, [slots[k].instruction for k in live], embodiment)
            timing["policy_s"] += time.perf_counter() - t0
            timing["policy_calls"] += 1
            chunk = _check_chunk(chunk, len(live), action_dim, name)
            horizon = chunk.shape[1] if execute_steps is None else min(execute_steps, chunk.shape[1])
            t0 = time.perf_counter()
            for j in range(horizon):
                for row, k in enumerate(live):
                    slot = slots[k]
                    if slot.done:
                        continue
                    slot.obs = slot.env.step(chunk[row, j])
                    timing["env_steps"] += 1
                    if slot.frames is not None:
                        slot.frames.append(slot.obs["images"])
                    t = slot.env.num_steps
                    if slot.success_step is None and slot.env.success():
                        slot.success_step = t
                    if ((slot.success_step is not None and t - slot.success_step >= hold_steps) or t >= limit
                            or slot.env.failure_kind() in _TERMINAL_FAILURES):
                        finish(slot)
            timing["env_s"] += time.perf_counter() - t0
            for k in live:
                if slots[k].done and queue:
                    start_episode(k, slots[k])
        for slot in slots:
            slot.env.close()
        finished.sort(key=_episode_order(families, splits))
        episodes.extend(finished)
    rollouts.sort(key=lambda r: (list(embodiments).index(r.episode.embodiment), _episode_order(families, splits)(r.episode)))
    bar.close()
    timing["episodes"] = len(episodes)
    timing["wall_s"] = time.perf_counter() - start
    timing["other_s"] = timing["wall_s"] - timing["policy_s"] - timing["env_s"]
    timing["steps_per_s"] = timing["env_steps"] / max(timing["wall_s"], 1e-9)
    return Results(name, settings, episodes, timing, rollouts)
