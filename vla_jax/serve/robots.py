"""Serving configs: how a robot's observation dict maps onto the model's camera slots, state and prompt.

A :class:`RobotConfig` names, per camera slot (0 primary / third-person, 1 left or only wrist, 2 right wrist, as
in vla_jax/data/specs.py), the observation key of its image, the state keys concatenated in order with their
sizes, the prompt key, and the dataset whose normalization statistics (the checkpoint's or the export folder's)
normalize the state and un-normalize the actions. Keys are paths: ``"observation/state"`` matches a flat key of
that name or ``{"observation": {"state": ...}}``.

Built in: the tabletop embodiments (``single_arm``, ``bimanual``), ``droid`` (openpi's DROID client: joint
positions), ``droid_cartesian`` (vla_jax's ``droid`` RLDS spec), ``aloha`` (openpi's ALOHA client: [3, H, W]
images), ``libero`` (openpi's LIBERO client). Add one with :func:`register_robot` or a JSON file of the fields
(``--robot=path/to/robot.json``).
"""

from __future__ import annotations

import dataclasses
import json
import os

IMAGE_LAYOUTS = ("hwc", "chw")


class RobotConfigError(ValueError):
    """An unknown robot or a bad serving config; one line."""


@dataclasses.dataclass(frozen=True)
class RobotConfig:
    """One robot's observation layout (see the module doc)."""

    name: str
    dataset: str  # norm-stats entry: state normalization and action un-normalization
    cameras: tuple[str | None, ...]  # observation key per camera slot, None for an empty slot
    state: tuple[tuple[str, int], ...]  # (observation key, size), concatenated in order
    image_layout: str = "hwc"  # "hwc": uint8 [H, W, 3]; "chw": uint8 [3, H, W]
    prompt_key: str = "prompt"
    default_prompt: str | None = None  # used when a request has no prompt (None: the prompt is required)
    notes: str = ""

    def __post_init__(self):
        if self.image_layout not in IMAGE_LAYOUTS:
            raise RobotConfigError(f"robot {self.name!r}: image_layout={self.image_layout!r} is not one of "
                                   f"{', '.join(IMAGE_LAYOUTS)}")
        if not any(self.cameras):
            raise RobotConfigError(f"robot {self.name!r} has no camera")
        if not self.state or any(int(n) < 1 for _, n in self.state):
            raise RobotConfigError(f"robot {self.name!r}: state needs (key, size >= 1) entries")
        keys = [k for k in self.cameras if k] + [k for k, _ in self.state] + [self.prompt_key]
        if len(set(keys)) != len(keys):
            raise RobotConfigError(f"robot {self.name!r} uses an observation key twice")

    @property
    def state_dim(self) -> int:
        return sum(int(n) for _, n in self.state)

    @classmethod
    def from_dict(cls, d: dict) -> RobotConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise RobotConfigError(f"robot config field {unknown[0]!r} is unknown "
                                   f"(fields: {', '.join(sorted(fields))})")
        try:
            return cls(**{**d, "cameras": tuple(d["cameras"]),
                          "state": tuple((str(k), int(n)) for k, n in d["state"])})
        except (KeyError, TypeError, ValueError) as e:
            raise RobotConfigError(f"bad robot config {d.get('name', '?')!r}: {e}") from None


ROBOTS: dict[str, RobotConfig] = {}


def register_robot(config: RobotConfig) -> RobotConfig:
    ROBOTS[config.name] = config
    return config


def get_robot(name: str) -> RobotConfig:
    """A registered robot, or the robot config in the JSON file ``name``."""
    if name.endswith(".json"):
        if not os.path.isfile(name):
            raise RobotConfigError(f"robot config file {name} does not exist")
        with open(name) as f:
            try:
                return RobotConfig.from_dict(json.load(f))
            except json.JSONDecodeError as e:
                raise RobotConfigError(f"robot config file {name} is not JSON ({e})") from None
    if name not in ROBOTS:
        raise RobotConfigError(f"unknown robot {name!r}; built in: {', '.join(sorted(ROBOTS))} (or a .json file)")
    return ROBOTS[name]


register_robot(RobotConfig(
    name="single_arm", dataset="tabletop_single_arm",
    cameras=("observation/image_0", "observation/image_1", None), state=(("observation/state", 8),),
    notes="vla_jax.sim single arm: overhead + wrist camera, state xyz, roll, pitch, yaw, aperture, aperture velocity.",
))
register_robot(RobotConfig(
    name="bimanual", dataset="tabletop_bimanual",
    cameras=("observation/image_0", "observation/image_1", "observation/image_2"),
    state=(("observation/state", 14),),
    notes="vla_jax.sim bimanual: overhead, left and right wrist cameras; state left arm then right arm.",
))
register_robot(RobotConfig(
    name="droid", dataset="droid",
    cameras=("observation/exterior_image_1_left", "observation/wrist_image_left", None),
    state=(("observation/joint_position", 7), ("observation/gripper_position", 1)),
    notes="openpi's DROID client (joint positions + gripper); e.g. an openpi DROID checkpoint imported with "
          "tools/import_openpi.py --dataset=droid.",
))
register_robot(RobotConfig(
    name="droid_cartesian", dataset="droid",
    cameras=("observation/exterior_image_1_left", "observation/wrist_image_left", None),
    state=(("observation/cartesian_position", 6), ("observation/gripper_position", 1)),
    notes="DROID with vla_jax's droid RLDS spec (end-effector pose + gripper).",
))
register_robot(RobotConfig(
    name="aloha", dataset="aloha", image_layout="chw",
    cameras=("images/cam_high", "images/cam_left_wrist", "images/cam_right_wrist"), state=(("state", 14),),
    notes="openpi's ALOHA client: images {cam_high, cam_left_wrist, cam_right_wrist} as uint8 [3, H, W], 14-D state.",
))
register_robot(RobotConfig(
    name="libero", dataset="libero",
    cameras=("observation/image", "observation/wrist_image", None), state=(("observation/state", 8),),
    notes="openpi's LIBERO client: agent-view and wrist images, 8-D state (eef pose + gripper).",
))
