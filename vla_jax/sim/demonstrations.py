"""Scripted-expert demonstrations as RLDS-style episodes (Open X-Embodiment step schema)."""

from __future__ import annotations

import numpy as np

from vla_jax.sim.env import TabletopEnv
from vla_jax.sim.expert import ScriptedExpert
from vla_jax.sim.grounding_answers import grounding_answer
from vla_jax.sim.tasks import Task

_PERTURB_STREAM = 3  # independent of the scene's (1) and the expert's (2) streams
_PERTURB_PROB = 0.25


def collect_episode(
    embodiment: str,
    task: Task,
    seed: int,
    max_steps: int,
    image_size: int = 96,
    noise: float = 0.1,
    hold_steps: int = 3,
    perturb: float = 0.0,
) -> dict:
    """Runs the expert on ``task`` in the scene of ``seed``.

    ``perturb`` > 0 injects noise into the executed actions while the expert's own actions are recorded
    (DART, Laskey et al. 2017): on a random ``_PERTURB_PROB`` of the steps the acting arm's translation
    gets Gaussian noise of std ``scale * max_step`` per axis, ``scale ~ U(0, perturb)`` per episode
    (seeded), so the demonstrations visit states off the expert's path together with the expert's
    correction from them; between pushes the expert converges as usual. The noise has zero mean, so a
    chunk of recorded actions stays unbiased for the clean outcome from its first state.

    Returns {"steps": [step, ...], "episode_metadata": {"task_family", "success", "seed", "embodiment",
    "perturb_std"}}. Step t holds the observation o_t seen before action a_t ({camera name: uint8
    [R, R, 3], "state": float32 [S]}), "action" float32 [A] (the expert's, as recorded),
    "language_instruction", "reward" float32 (1.0 on the step whose action first achieves success),
    "discount" float32 1.0, "target_location" (the target object's location token in the primary
    camera at o_t, "" while a gripper has reached it; vla_jax.sim.grounding_answers), "is_first", "is_last"
    and "is_terminal" (last step of a successful episode). The episode ends ``hold_steps`` steps after
    the success step, so the last observations show the final hold, or after ``max_steps`` steps.
    """
    env = TabletopEnv(embodiment, image_size)
    obs = env.reset(task, seed)
    expert = ScriptedExpert(env, noise=noise, seed=seed)
    perturb_rng = np.random.default_rng([seed, _PERTURB_STREAM])
    perturb_std = perturb_rng.uniform(0.0, perturb) * env.spec.max_step if perturb > 0 else 0.0
    steps: list[dict] = []
    success_step = None
    for t in range(max_steps):
        action = expert.act()
        target_location = grounding_answer(env.world, env.spec.cameras[0], env.target)
        executed = action
        if perturb_std > 0:
            executed = action.copy()
            push = perturb_rng.normal(0.0, perturb_std, size=3)
            if perturb_rng.random() < _PERTURB_PROB:
                executed[7 * expert.arm : 7 * expert.arm + 3] += push
        next_obs = env.step(executed)
        succeeded = env.success()
        first_success = succeeded and success_step is None
        if first_success:
            success_step = t
        last = t == max_steps - 1 or (success_step is not None and t - success_step >= hold_steps)
        steps.append(
            {
                "observation": {**obs["images"], "state": obs["state"]},
                "action": action.astype(np.float32),
                "language_instruction": task.instruction,
                "target_location": target_location,
                "reward": np.float32(1.0 if first_success else 0.0),
                "discount": np.float32(1.0),
                "is_first": t == 0,
                "is_last": last,
                "is_terminal": last and succeeded,
            }
        )
        obs = next_obs
        if last:
            break
    metadata = {"task_family": task.family, "success": env.success(), "seed": seed, "embodiment": embodiment,
                "perturb_std": float(perturb_std)}
    return {"steps": steps, "episode_metadata": metadata}
