"""Scripted-expert demonstrations as RLDS-style episodes (Open X-Embodiment step schema)."""

from __future__ import annotations

import numpy as np

from vla_jax.sim.env import TabletopEnv
from vla_jax.sim.expert import ScriptedExpert
from vla_jax.sim.grounding import grounding_answer
from vla_jax.sim.tasks import Task


def collect_episode(
    embodiment: str,
    task: Task,
    seed: int,
    max_steps: int,
    image_size: int = 96,
    noise: float = 0.1,
    hold_steps: int = 3,
) -> dict:
    """Runs the expert on ``task`` in the scene of ``seed``.

    Returns {"steps": [step, ...], "episode_metadata": {"task_family", "success", "seed", "embodiment"}}.
    Step t holds the observation o_t seen before action a_t ({camera name: uint8 [R, R, 3], "state":
    float32 [S]}), "action" float32 [A], "language_instruction", "reward" float32 (1.0 on the step
    whose action first achieves success), "discount" float32 1.0, "target_location" (the target
    object's location token in the primary camera at o_t, "" while a gripper has reached it;
    vla_jax.sim.grounding), "is_first", "is_last" and
    "is_terminal" (last step of a successful episode). The episode ends ``hold_steps`` steps after
    the success step, so the last observations show the final hold, or after ``max_steps`` steps.
    """
    env = TabletopEnv(embodiment, image_size)
    obs = env.reset(task, seed)
    expert = ScriptedExpert(env, noise=noise, seed=seed)
    steps: list[dict] = []
    success_step = None
    for t in range(max_steps):
        action = expert.act()
        target_location = grounding_answer(env.world, env.spec.cameras[0], env.target)
        next_obs = env.step(action)
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
    metadata = {"task_family": task.family, "success": env.success(), "seed": seed, "embodiment": embodiment}
    return {"steps": steps, "episode_metadata": metadata}
