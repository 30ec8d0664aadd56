"""Policies for closed-loop evaluation: the protocol and adapters (expert, baselines, the model).

A policy maps a batch of observations to a chunk of actions in the embodiment's real units
(see vla_jax.sim.embodiments): ``act(observations, instructions, embodiment) -> [B, H, action_dim]``.
The harness (vla_jax.eval.closed_loop) executes the first ``execute_steps`` actions of each chunk.

Observations are the sim's dicts ``{"images": {camera: uint8 [R, R, 3]}, "state": float32 [S]}``
plus ``"meta"``: {"slot": batch slot, "episode_id": unique per evaluation, "step": env steps taken
in this episode, "seed": the episode's seed, "family", "split"}. Before the first ``act`` of an
episode in a slot, the harness calls ``begin_episode(slot, env, seed)`` if the policy has it:
privileged policies (the scripted expert) read the env there, stochastic baselines re-seed
per episode (so their outcomes do not depend on ``num_envs`` or batch composition).
A policy that reads no images sets ``uses_images = False``; suites that can, then skip rendering.
"""

from __future__ import annotations

import json
from typing import Callable, Mapping, Protocol, Sequence, runtime_checkable

import jax
import numpy as np

from vla_jax.data.policy_io import make_policy_io
from vla_jax.models import vla
from vla_jax.sim import EMBODIMENTS, ScriptedExpert, TabletopEnv, sample_task


@runtime_checkable
class Policy(Protocol):
    name: str

    def reset(self, batch_size: int) -> None:
        """Called once per embodiment before its episodes, with the number of env slots."""

    def act(self, observations: list[dict], instructions: list[str], embodiment: str) -> np.ndarray:
        """Returns float [len(observations), H, action_dim] (real units, H >= 1)."""


class ExpertPolicy:
    """The privileged scripted expert (reads the world state of each slot's env); H = 1.

    A fresh expert from ``env.expert(noise, seed)`` (the tabletop's ScriptedExpert, Meta-World's scripted
    policies) seeded by the episode seed drives each episode, so an episode's outcome depends only on
    its seed. ``noise`` as in ScriptedExpert (0.1 is the data generator's).
    """

    uses_images = False

    def __init__(self, noise: float = 0.1, name: str = "expert"):
        self.noise = noise
        self.name = name
        self._experts: dict[int, object] = {}

    def reset(self, batch_size: int) -> None:
        self._experts = {}

    def begin_episode(self, slot: int, env, seed: int) -> None:
        self._experts[slot] = env.expert(self.noise, seed)

    def act(self, observations, instructions, embodiment):
        return np.stack([self._experts[o["meta"]["slot"]].act() for o in observations])[:, None, :]


class RandomPolicy:
    """Uniform random actions within the env's ``action_bounds()`` (gripper commands that are absolute 0 / 1:
    random 0 / 1), re-seeded per episode from (seed, episode seed). Chunks of ``horizon`` actions."""

    uses_images = False

    def __init__(self, seed: int = 0, horizon: int = 1, name: str = "random"):
        self.seed, self.horizon, self.name = seed, horizon, name
        self._rngs: dict[int, np.random.Generator] = {}
        self._bounds: dict[int, tuple] = {}

    def reset(self, batch_size: int) -> None:
        self._rngs, self._bounds = {}, {}

    def begin_episode(self, slot: int, env, seed: int) -> None:
        self._rngs[slot] = np.random.default_rng([self.seed, seed, 7])
        self._bounds[slot] = env.action_bounds()

    def act(self, observations, instructions, embodiment):
        out = []
        for o in observations:
            low, high, grip = self._bounds[o["meta"]["slot"]]
            a = self._rngs[o["meta"]["slot"]].uniform(low, high, size=(self.horizon, len(low)))
            out.append(np.where(grip, np.round(a), a))
        return np.stack(out).astype(np.float32)


class MeanActionPolicy:
    """Open-loop replay of a mean action (chunk): ignores observations and instructions.

    ``means[embodiment]`` is either [action_dim] (the same action every step, e.g. the dataset's
    per-dimension action mean) or [T, action_dim] (a mean trajectory: step t of an episode plays row
    min(t, T - 1)). Returns chunks of ``horizon`` actions.
    """

    uses_images = False

    def __init__(self, means: Mapping[str, np.ndarray], horizon: int = 1, name: str = "mean"):
        self.means = {k: np.asarray(v, np.float32) for k, v in means.items()}
        self.horizon, self.name = horizon, name

    def reset(self, batch_size: int) -> None:
        pass

    def act(self, observations, instructions, embodiment):
        if embodiment not in self.means:
            raise KeyError(f"MeanActionPolicy has no mean action for embodiment '{embodiment}' (has {sorted(self.means)})")
        mean = self.means[embodiment]
        if mean.ndim == 1:
            return np.broadcast_to(mean, (len(observations), self.horizon, mean.shape[0])).copy()
        rows = [np.minimum(o["meta"]["step"] + np.arange(self.horizon), len(mean) - 1) for o in observations]
        return np.stack([mean[r] for r in rows])

    @classmethod
    def from_stats(cls, stats: Mapping[str, dict | str], horizon: int = 1, name: str = "mean") -> "MeanActionPolicy":
        """From dataset statistics (vla_jax.data.norm_stats format: a dict or the path of its JSON file) per
        embodiment: replays ``stats["action"]["mean"]``."""
        means = {}
        for embodiment, s in stats.items():
            if isinstance(s, str):
                with open(s) as f:
                    s = json.load(f)
            means[embodiment] = np.asarray(s["action"]["mean"], np.float32)
        return cls(means, horizon, name)

    @classmethod
    def from_expert(
        cls,
        embodiments: Sequence[str] = tuple(EMBODIMENTS),
        num_episodes: int = 32,
        *,
        per_step: bool = True,
        noise: float = 0.1,
        seed: int = 123_456_789,
        horizon: int = 1,
        name: str = "mean",
    ) -> "MeanActionPolicy":
        """Mean action of scripted-expert demonstrations on random ``train`` tasks (no dataset needed):
        the per-step mean trajectory [T, A] over episodes (with ``per_step``; an ended episode repeats
        a zero action with its final gripper command), else the overall mean [A] as in dataset stats."""
        means = {}
        for embodiment in embodiments:
            spec = EMBODIMENTS[embodiment]
            env = TabletopEnv(embodiment, image_size=8)
            trajectories = []
            for i in range(num_episodes):
                s = seed + i
                env.reset(sample_task(np.random.default_rng(s), split="train"), s)
                expert = ScriptedExpert(env, noise=noise, seed=s)
                actions = []
                for _ in range(spec.max_episode_steps):
                    actions.append(expert.act())
                    env.step(actions[-1])
                    if env.success():
                        break
                trajectories.append(np.stack(actions))
            if per_step:
                pad = np.zeros((spec.max_episode_steps, spec.action_dim), np.float32)
                stacked = []
                for a in trajectories:
                    full = pad.copy()
                    full[: len(a)] = a
                    full[len(a):, np.asarray(spec.gripper_dims)] = a[-1, np.asarray(spec.gripper_dims)]
                    stacked.append(full)
                means[embodiment] = np.mean(stacked, axis=0)
            else:
                means[embodiment] = np.concatenate(trajectories).mean(0)
        return cls(means, horizon, name)


class ModelPolicy:
    """Adapter for a learned policy.

    - ``predict(obs_batch) -> [B, H, A_model]`` normalized action chunk; obs_batch is the model's
      observation dict (vla_jax/batch.py, keys OBSERVATION_KEYS) with a leading batch axis.
      If it has a ``reset()`` method it is called by :meth:`reset` (see :func:`ActionSampler`).
    - ``preprocess(obs, instruction, embodiment) -> dict`` one example's observation dict with a
      leading axis of 1 (e.g. ``PolicyIO.observation``), or a mapping {embodiment: f(obs, instruction)}.
    - ``unnormalize(chunk [B, H, A_model], embodiment) -> [B, H, action_dim]`` real units (e.g.
      ``PolicyIO.actions``), or a mapping {embodiment: f(chunk)}.

    With ``pad_batch`` the batch is padded to the ``reset`` batch size (repeating its first example)
    so a jitted ``predict`` compiles once per embodiment even when few envs are still running.
    """

    def __init__(self, predict: Callable, preprocess, unnormalize, *, pad_batch: bool = True, name: str = "model"):
        self.predict, self.pad_batch, self.name = predict, pad_batch, name
        self._preprocess, self._unnormalize = preprocess, unnormalize
        self.batch_size = None
        self.num_calls = 0

    @classmethod
    def from_policy_io(cls, predict: Callable, ios: Mapping[str, object], **kwargs) -> "ModelPolicy":
        """``ios``: {embodiment: vla_jax.data.policy_io.PolicyIO} (anything with .observation / .actions)."""
        return cls(predict, {k: io.observation for k, io in ios.items()}, {k: io.actions for k, io in ios.items()}, **kwargs)

    def _pick(self, fn, embodiment):
        if isinstance(fn, Mapping):
            if embodiment not in fn:
                raise KeyError(f"policy '{self.name}' has no preprocessing / un-normalization for embodiment "
                               f"'{embodiment}' (has {sorted(fn)})")
            return fn[embodiment], False
        return fn, True

    def reset(self, batch_size: int) -> None:
        self.batch_size = batch_size
        if hasattr(self.predict, "reset"):
            self.predict.reset()

    def act(self, observations, instructions, embodiment):
        pre, with_emb = self._pick(self._preprocess, embodiment)
        examples = [pre(o, t, embodiment) if with_emb else pre(o, t) for o, t in zip(observations, instructions)]
        batch = {k: np.concatenate([np.asarray(e[k]) for e in examples]) for k in examples[0]}
        n = len(observations)
        if self.pad_batch and self.batch_size and n < self.batch_size:
            batch = {k: np.concatenate([v, np.repeat(v[:1], self.batch_size - n, axis=0)]) for k, v in batch.items()}
        chunk = np.asarray(self.predict(batch), np.float32)[:n]
        self.num_calls += 1
        un, with_emb = self._pick(self._unnormalize, embodiment)
        return np.asarray(un(chunk, embodiment) if with_emb else un(chunk), np.float32)


def call_key(seed: int, call: int) -> jax.Array:
    """The PRNG key of a sampler's ``call``-th call: ``fold_in(PRNGKey(seed), call)``."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), call)


def flow_noise(seed: int, call: int, shape: tuple[int, int, int]) -> np.ndarray:
    """The initial flow noise [B, H, A] that :class:`ActionSampler` (``num_samples=1``) draws on its ``call``-th
    call for a batch of B (``vla.sample``): what a remote policy sends so its chunks equal the in-process ones."""
    return np.asarray(jax.random.normal(call_key(seed, call), shape, jax.numpy.float32))


class ActionSampler:
    """``predict`` for :class:`ModelPolicy` from a vla_jax.models.vla model: jitted ``vla.sample``
    with a fresh noise key per call, folded from ``seed`` and a call counter that ``reset`` rewinds,
    so an evaluation is reproducible.

    ``num_samples`` > 1 returns the mean of that many flow samples (independent noise keys split from
    the call's key): an estimate of the conditional mean chunk, which trades the diversity of single
    samples for less scatter where the policy is unsure (docs/evaluation.md). The discrete head decodes
    greedily, so its samples are identical.
    """

    def __init__(self, model, params, seed: int = 0, num_samples: int = 1):
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples} must be >= 1")

        def predict(p, obs, rng):
            if num_samples == 1:
                return vla.sample(model, p, obs, rng)
            return jax.vmap(lambda key: vla.sample(model, p, obs, key))(jax.random.split(rng, num_samples)).mean(0)

        self.seed = seed
        self._fn = jax.jit(predict)
        self.params = params
        self.calls = 0

    def reset(self) -> None:
        self.calls = 0

    def __call__(self, obs: dict) -> np.ndarray:
        rng = call_key(self.seed, self.calls)
        self.calls += 1
        return np.asarray(self._fn(self.params, obs, rng))


DEFAULT_DATASETS = {"single_arm": "tabletop_single_arm", "bimanual": "tabletop_bimanual"}


def make_model_policy(config, model, params, *, datasets: Mapping[str, str] | None = None, seed: int = 0,
                      num_samples: int = 1, name: str = "model") -> ModelPolicy:
    """The model as a policy, with the training preprocessing and normalization of ``config``
    (vla_jax.data.policy_io.make_policy_io) for each embodiment's dataset (default: the tabletop ones)."""
    datasets = dict(DEFAULT_DATASETS if datasets is None else datasets)
    ios = {emb: make_policy_io(config, ds) for emb, ds in datasets.items()}
    return ModelPolicy.from_policy_io(ActionSampler(model, params, seed, num_samples), ios, name=name)
