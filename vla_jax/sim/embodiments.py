"""Embodiment registry: action / state layout, control rate, step limits and cameras of each robot.

Per-arm action (7): dx, dy, dz [m], droll, dpitch, dyaw [rad], gripper (0 open .. 1 close).
Roll and pitch deltas are accepted but have no effect (the grippers only turn about z).
Per-arm state (7): x, y, z [m], roll, pitch, yaw [rad], gripper aperture (0 open .. 1 closed).

single_arm: action [7]; state [8] = arm state + aperture change over the last step; 10 Hz.
bimanual:   action [14] = left arm, right arm; state [14] = left, right; 20 Hz, smaller steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vla_jax.sim.render import CameraSpec

ARM_ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
ARM_STATE_NAMES = ("x", "y", "z", "roll", "pitch", "yaw", "gripper")


@dataclass(frozen=True)
class Embodiment:
    """Static description of a robot (shapes: action [action_dim], state [state_dim])."""

    name: str
    action_dim: int
    state_dim: int
    control_hz: float
    cameras: tuple[CameraSpec, ...]
    max_step: float  # max |translation| per action and axis [m]
    max_rot_step: float  # max |yaw change| per action [rad]
    gripper_speed: float  # max aperture change per action
    arm_homes: tuple[tuple[float, float, float], ...]  # initial fingertip positions, one per arm
    arm_bases: tuple[tuple[float, float, float], ...]  # where each arm is mounted (drawn only)
    max_episode_steps: int  # a generous episode limit for the scripted expert / evaluation
    action_names: tuple[str, ...]
    state_names: tuple[str, ...]

    camera_names: tuple[str, ...] = field(init=False)  # e.g. ("image_0", "image_1")
    gripper_dims: tuple[bool, ...] = field(init=False)  # [action_dim], True on gripper dims (absolute 0/1)

    def __post_init__(self):
        object.__setattr__(self, "camera_names", tuple(c.name for c in self.cameras))
        object.__setattr__(self, "gripper_dims", tuple(n.endswith("gripper") for n in self.action_names))

    @property
    def num_arms(self) -> int:
        return len(self.arm_homes)


def _prefixed(names: tuple[str, ...], prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{n}" for n in names)


EMBODIMENTS: dict[str, Embodiment] = {
    "single_arm": Embodiment(
        name="single_arm",
        action_dim=7,
        state_dim=8,
        control_hz=10.0,
        cameras=(
            CameraSpec("image_0", "fixed", center=(0.0, 0.0), height=0.8, fov=0.7),
            CameraSpec("image_1", "wrist", arm=0, height=0.11, fov=1.2),
        ),
        max_step=0.06,
        max_rot_step=0.25,
        gripper_speed=0.5,
        arm_homes=((0.0, -0.17, 0.15),),
        arm_bases=((0.0, -0.42, 0.3),),
        max_episode_steps=60,
        action_names=ARM_ACTION_NAMES,
        state_names=ARM_STATE_NAMES + ("gripper_velocity",),
    ),
    "bimanual": Embodiment(
        name="bimanual",
        action_dim=14,
        state_dim=14,
        control_hz=20.0,
        cameras=(
            CameraSpec("image_0", "fixed", center=(0.0, 0.03), height=0.9, fov=0.7),
            CameraSpec("image_1", "wrist", arm=0, height=0.11, fov=1.2),
            CameraSpec("image_2", "wrist", arm=1, height=0.11, fov=1.2),
        ),
        max_step=0.035,
        max_rot_step=0.15,
        gripper_speed=0.34,
        arm_homes=((-0.16, -0.18, 0.15), (0.16, -0.18, 0.15)),
        arm_bases=((-0.22, -0.44, 0.3), (0.22, -0.44, 0.3)),
        max_episode_steps=100,
        action_names=_prefixed(ARM_ACTION_NAMES, "left_") + _prefixed(ARM_ACTION_NAMES, "right_"),
        state_names=_prefixed(ARM_STATE_NAMES, "left_") + _prefixed(ARM_STATE_NAMES, "right_"),
    ),
}

