"""Scripted waypoint expert that solves pick / place / push for any embodiment.

It reads the privileged world state of a TabletopEnv each step (closed loop). In bimanual scenes
the arm nearer to the target does the task and the other arm holds still. Demonstrations differ
through per-episode random waypoints (heights, grasp offset, speed, push overshoot) and Gaussian
action noise whose scale is relative: ``noise * (|commanded delta| + 15% of the max step)``.
"""

from __future__ import annotations

import math

import numpy as np

from vla_jax.sim.env import TabletopEnv
from vla_jax.sim.tasks import DIRECTIONS, PUSH_DISTANCE, push_corridor
from vla_jax.sim.world import GRIPPER_RADIUS, Arm, SceneObject, wrap_angle

_COARSE_TOL = 0.015  # [m] waypoint tolerance in free space
_FINE_TOL = 0.008  # [m] tolerance for grasp / push start positions
_PUSH_Z = 0.015  # fingertip height while pushing
_NOISE_FLOOR = 0.15
_EXPERT_STREAM = 2


class ScriptedExpert:
    """``act()`` returns the next action, float32 [action_dim]. Re-plans after every env.reset."""

    def __init__(self, env: TabletopEnv, noise: float = 0.1, seed: int = 0):
        self.env = env
        self.noise = noise
        self.rng = np.random.default_rng([seed, _EXPERT_STREAM])  # independent of the scene's stream
        self._episode = -1

    def _plan(self) -> None:
        env, rng = self.env, self.rng
        obj = env.world.objects[env.target]
        self.arm = int(np.argmin([np.linalg.norm(a.pos[:2] - obj.pos[:2]) for a in env.world.arms]))
        self.speed = rng.uniform(0.8, 1.0) * env.spec.max_step
        self.hover = rng.uniform(0.10, 0.14)
        self.lift = rng.uniform(0.13, 0.18)
        self.release_z = rng.uniform(0.085, 0.11)
        self.grasp_offset = np.clip(rng.normal(0.0, 0.003, size=2), -0.008, 0.008)
        self.push_extra = rng.uniform(0.025, 0.045)
        self.phase = "push_approach" if env.task.family == "push" else "approach"
        self.anchor = None  # xyz kept by phases that hold or retreat
        self._episode = env.episode

    def act(self) -> np.ndarray:
        if self._episode != self.env.episode:
            self._plan()
        for _ in range(8):  # follow phase changes until a phase yields a command
            out = getattr(self, f"_{self.phase}")()
            if not isinstance(out, str):
                break
            self.phase, self.anchor = out, None
        else:
            raise RuntimeError(f"expert phases did not settle (last phase {self.phase!r})")
        target, grip, yaw = out
        action = np.zeros(self.env.spec.action_dim, dtype=np.float32)
        action[7 * self.arm : 7 * self.arm + 7] = self._arm_action(target, grip, yaw)
        return action

    # -- helpers

    @property
    def _ee(self) -> Arm:
        return self.env.world.arms[self.arm]

    @property
    def _obj(self) -> SceneObject:
        return self.env.world.objects[self.env.target]

    def _reached(self, target: np.ndarray, tol: float) -> bool:
        return float(np.linalg.norm(target - self._ee.pos)) < tol

    def _grasp_xyz(self) -> np.ndarray:
        obj = self._obj
        z = obj.pos[2] + np.clip(0.45 * obj.height, 0.012, 0.03)
        return np.array([*(obj.pos[:2] + self.grasp_offset), z])

    def _grasp_yaw(self) -> float:
        obj = self._obj
        if obj.kind != "block":
            return 0.0
        return (obj.yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4  # the nearest of the block's 4 sides

    def _hold_here(self) -> np.ndarray:
        if self.anchor is None:
            self.anchor = self._ee.pos.copy()
        return self.anchor

    def _arm_action(self, target: np.ndarray, grip: float, yaw: float) -> np.ndarray:
        spec, rng, arm = self.env.spec, self.rng, self._ee
        delta = target - arm.pos
        dist = float(np.linalg.norm(delta))
        if dist > self.speed:
            delta *= self.speed / dist
        delta += rng.normal(0.0, self.noise * (min(dist, self.speed) + _NOISE_FLOOR * spec.max_step), size=3)
        dyaw = float(np.clip(wrap_angle(yaw - arm.yaw), -0.8 * spec.max_rot_step, 0.8 * spec.max_rot_step))
        dyaw += rng.normal(0.0, self.noise * (abs(dyaw) + _NOISE_FLOOR * spec.max_rot_step))
        out = np.zeros(7)
        out[:3] = np.clip(delta, -spec.max_step, spec.max_step)
        out[5] = np.clip(dyaw, -spec.max_rot_step, spec.max_rot_step)
        out[6] = grip
        return out

    # -- pick and place phases: each returns (target xyz, gripper command, target yaw) or the next phase

    def _approach(self):
        target = self._grasp_xyz()
        target[2] = self.hover
        if self._reached(target, _COARSE_TOL):
            return "descend"
        return target, 0.0, self._grasp_yaw()

    def _descend(self):
        target = self._grasp_xyz()
        if self._reached(target, _FINE_TOL):
            return "close"
        if np.linalg.norm(target[:2] - self._ee.pos[:2]) > self._obj.radius + GRIPPER_RADIUS - 0.005:
            # beside the object: re-center above it first instead of sweeping into it
            clear = self._obj.top + 0.02
            target = np.array([*(target[:2] if self._ee.pos[2] >= clear else self._ee.pos[:2]), clear])
        return target, 0.0, self._grasp_yaw()

    def _close(self):
        arm = self._ee
        if arm.aperture >= 0.99:
            return "lift" if arm.held == self.env.target else "reopen"
        return self._grasp_xyz(), 1.0, self._grasp_yaw()

    def _reopen(self):
        target = self._grasp_xyz()
        target[2] = self.hover
        if self._ee.aperture <= 0.01 and self._reached(target, _COARSE_TOL):
            return "approach"
        return target, 0.0, self._ee.yaw

    def _lift(self):
        arm = self._ee
        if arm.held != self.env.target:
            return "reopen"
        target = self._hold_here().copy()
        target[2] = self.lift
        if self._reached(target, _COARSE_TOL):
            return "hold" if self.env.task.family == "pick" else "transport"
        return target, 1.0, arm.yaw

    def _bowl_xy(self) -> np.ndarray:
        return self.env.world.objects[self.env.container].pos[:2] + self.grasp_offset

    def _transport(self):
        if self._ee.held != self.env.target:
            return "reopen"
        target = np.array([*self._bowl_xy(), self.lift])
        if self._reached(target, _COARSE_TOL):
            return "lower"
        return target, 1.0, self._ee.yaw

    def _lower(self):
        target = np.array([*self._bowl_xy(), self.release_z])
        if self._reached(target, _FINE_TOL):
            return "release"
        return target, 1.0, self._ee.yaw

    def _release(self):
        arm = self._ee
        if arm.held is None and arm.aperture <= 0.01:
            return "retreat"
        return self._hold_here(), 0.0, arm.yaw

    def _retreat(self):
        target = self._hold_here().copy()
        target[2] = min(target[2] + 0.06, 0.25)
        if self._reached(target, _COARSE_TOL):
            return "hold"
        return target, 0.0, self._ee.yaw

    def _hold(self):
        arm = self._ee
        return self._hold_here(), float(arm.aperture >= 0.5), arm.yaw

    # -- push phases (gripper kept closed)

    def _push_start(self) -> np.ndarray:
        obj = self._obj
        return push_corridor(self.env.task, obj.pos[:2], obj.radius)[0]

    def _push_approach(self):
        target = np.array([*self._push_start(), self.hover])
        if self._reached(target, _COARSE_TOL):
            return "push_descend"
        return target, 1.0, 0.0

    def _push_descend(self):
        target = np.array([*self._push_start(), _PUSH_Z])
        if self._reached(target, _FINE_TOL):
            return "push"
        return target, 1.0, 0.0

    def _push(self):
        direction = np.array(DIRECTIONS[self.env.task.direction])
        if float(self.env.world.displacement(self.env.target) @ direction) >= PUSH_DISTANCE + self.push_extra:
            return "push_retreat"
        arm, obj = self._ee, self._obj
        across = np.array([-direction[1], direction[0]])
        lateral = float((obj.pos[:2] - arm.pos[:2]) @ across)
        if float((obj.pos[:2] - arm.pos[:2]) @ direction) <= 0.0 or abs(lateral) > obj.radius:
            return "push_rise"  # lost contact: rise, then line up again
        xy = arm.pos[:2] + direction * self.speed + across * lateral
        return np.array([*xy, _PUSH_Z]), 1.0, 0.0

    def _push_rise(self):
        target = self._hold_here().copy()
        target[2] = self.hover
        if self._reached(target, _COARSE_TOL):
            return "push_approach"
        return target, 1.0, 0.0

    def _push_retreat(self):
        direction = np.array(DIRECTIONS[self.env.task.direction])
        start = self._hold_here()
        target = np.array([*(start[:2] - 0.03 * direction), self.hover])
        if self._reached(target, _COARSE_TOL):
            return "hold"
        return target, 1.0, 0.0
