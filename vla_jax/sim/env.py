"""TabletopEnv: one embodiment acting in the tabletop world, observed through its cameras."""

from __future__ import annotations

import numpy as np

from vla_jax.sim.embodiments import EMBODIMENTS, Embodiment
from vla_jax.sim.render import render
from vla_jax.sim.tasks import Task, make_scene, task_failure, task_success
from vla_jax.sim.world import Arm, World

_HOME_JITTER = 0.03
_YAW_JITTER = 0.15
_SCENE_STREAM = 1


class TabletopEnv:
    """Deterministic tabletop environment.

    obs = {"images": {camera name: uint8 [R, R, 3]}, "state": float32 [state_dim]}. Actions are
    float [action_dim] (see vla_jax.sim.embodiments); translation deltas are clipped to the
    embodiment's ``max_step``. Episode length is up to the caller.
    """

    def __init__(self, embodiment: str = "single_arm", image_size: int = 96):
        self.spec: Embodiment = EMBODIMENTS[embodiment]
        self.image_size = image_size
        self.world: World | None = None
        self.task: Task | None = None
        self.target = 0
        self.container: int | None = None
        self.episode = 0  # increments on every reset
        self.num_steps = 0

    def reset(self, task: Task, seed: int) -> dict:
        """Lays out a fresh scene for ``task``; deterministic in (task, seed). The scene draws from its
        own stream of ``seed``, uncorrelated with e.g. ``sample_task(np.random.default_rng(seed))``."""
        rng = np.random.default_rng([seed, _SCENE_STREAM])
        objects, self.target, self.container = make_scene(task, rng)
        arms = [
            Arm(
                pos=np.array(home) + rng.uniform(-_HOME_JITTER, _HOME_JITTER, size=3),
                yaw=float(rng.uniform(-_YAW_JITTER, _YAW_JITTER)),
                base=base,
            )
            for home, base in zip(self.spec.arm_homes, self.spec.arm_bases)
        ]
        self.world = World(objects, arms)
        self.task = task
        self.episode += 1
        self.num_steps = 0
        return self.observe()

    def step(self, action: np.ndarray) -> dict:
        """Applies action [action_dim] and returns the new observation."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.spec.action_dim,):
            raise ValueError(f"{self.spec.name} expects an action of shape ({self.spec.action_dim},), got {action.shape}")
        self.world.step(action.reshape(self.spec.num_arms, 7), self.spec.max_step, self.spec.max_rot_step, self.spec.gripper_speed)
        self.num_steps += 1
        return self.observe()

    def observe(self) -> dict:
        images = {cam.name: render(self.world, cam, self.image_size) for cam in self.spec.cameras}
        return {"images": images, "state": self.state()}

    def state(self) -> np.ndarray:
        """float32 [state_dim]: per arm x, y, z, roll (0), pitch (0), yaw, aperture; single_arm adds the aperture change."""
        parts = [np.array([*arm.pos, 0.0, 0.0, arm.yaw, arm.aperture]) for arm in self.world.arms]
        if self.spec.state_dim > 7 * len(parts):
            parts.append(np.array([self.world.arms[0].aperture_vel]))
        return np.concatenate(parts).astype(np.float32)

    def success(self) -> bool:
        return task_success(self.world, self.task, self.target, self.container)

    def failure_kind(self) -> str | None:
        """See vla_jax.sim.tasks.task_failure; timeouts are the caller's business."""
        return task_failure(self.world, self.task, self.target, self.container)

    def expert(self, noise: float = 0.1, seed: int = 0):
        """The privileged scripted expert of the current episode (vla_jax.sim.expert.ScriptedExpert)."""
        from vla_jax.sim.expert import ScriptedExpert  # expert.py builds on this module

        return ScriptedExpert(self, noise=noise, seed=seed)

    def action_bounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(low, high, gripper mask) [action_dim] each of meaningful actions: +-max_step on xyz,
        +-max_rot_step on the rotations, [0, 1] on grippers (absolute 0 / 1 commands)."""
        spec = self.spec
        arm_high = np.array([spec.max_step] * 3 + [spec.max_rot_step] * 3 + [1.0])
        arm_low = np.array([-spec.max_step] * 3 + [-spec.max_rot_step] * 3 + [0.0])
        return np.tile(arm_low, spec.num_arms), np.tile(arm_high, spec.num_arms), np.asarray(spec.gripper_dims)

    def close(self) -> None:
        """Nothing to release (the suite interface, vla_jax/eval/suites.py)."""
