"""Scripted-expert demonstrations of Meta-World tasks as RLDS-style episodes (the tabletop's step schema)."""

from __future__ import annotations

import numpy as np

from vla_jax.sim.metaworld.env import MetaWorldEnv
from vla_jax.sim.metaworld.tasks import MetaWorldTask


def collect_episode(task: MetaWorldTask, seed: int, max_steps: int, image_size: int = 64, noise: float = 0.1,
                    hold_steps: int = 3, env: MetaWorldEnv | None = None) -> dict:
    """Runs Meta-World's scripted policy for ``task`` (Gaussian action noise of std ``noise``) from the
    initial state of ``seed``; ``env``: an env to reuse (building one per task costs ~0.7 s).

    Returns {"steps": [step, ...], "episode_metadata": {"task_family", "success", "seed", "embodiment"}}.
    Step t holds the observation o_t seen before action a_t ({"corner2", "gripperPOV": uint8 [R, R, 3],
    "state": float32 [4]}), "action" float32 [4] (the executed, noisy one), "language_instruction",
    "reward" float32 (1.0 on the step whose action first achieves success), "discount" 1.0, "is_first",
    "is_last" and "is_terminal" (last step of a successful episode). The episode ends ``hold_steps``
    steps after the success step, or after ``max_steps`` steps.
    """
    own = env is None
    env = MetaWorldEnv("sawyer", image_size) if own else env
    try:
        obs = env.reset(task, seed)
        expert = env.expert(noise, seed)
        steps: list[dict] = []
        success_step = None
        for t in range(max_steps):
            action = expert.act()
            next_obs = env.step(action)
            first_success = env.success() and success_step is None
            if first_success:
                success_step = t
            last = t == max_steps - 1 or (success_step is not None and t - success_step >= hold_steps)
            steps.append({
                "observation": {**obs["images"], "state": obs["state"]},
                "action": action.astype(np.float32),
                "language_instruction": task.instruction,
                "reward": np.float32(1.0 if first_success else 0.0),
                "discount": np.float32(1.0),
                "is_first": t == 0,
                "is_last": last,
                "is_terminal": last and success_step is not None,
            })
            obs = next_obs
            if last:
                break
    finally:
        if own:
            env.close()
    metadata = {"task_family": task.family, "success": success_step is not None, "seed": seed, "embodiment": "sawyer"}
    return {"steps": steps, "episode_metadata": metadata}
