"""Per-dataset standardization specs: how a dataset's own keys map onto the batch format.

Robot datasets (RLDS episodes) and web vision-language datasets each have a spec
kind. A spec says where things live inside one *step* (robot) or one *example*
(web); key paths use ``/`` for nesting, exactly as TFDS flattens feature names
(``observation/image_0``, ``action/world_vector``).

Camera slots are fixed across datasets so that a model sees the same kind of
view in the same slot: slot 0 = primary / overhead / third-person camera,
slot 1 = wrist (left wrist for bimanual), slot 2 = right wrist. A dataset that
lacks a view leaves the slot ``None`` and the pipeline masks it out.

Add a dataset by adding an entry to :data:`SPECS` (or call :func:`register_spec`)
and naming it as ``spec`` in ``config.data.datasets``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from vla_jax.data.errors import DataError

NORMALIZATIONS = ("bounds_q99", "normal", "none")


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """Layout of an RLDS robot dataset (keys relative to one step)."""

    name: str
    image_keys: tuple  # per camera slot: key path or None, e.g. ("observation/image_0", None, None)
    state_keys: tuple  # key paths concatenated in order into the state vector
    action_keys: tuple  # one key, or several sub-keys concatenated in order
    instruction_key: str  # "language_instruction" or "observation/natural_language_instruction"
    action_dim: int  # expected dimension of the concatenated action
    state_dim: int  # expected dimension of the concatenated state
    control_hz: float
    action_normalization: str = "bounds_q99"  # "bounds_q99" (OpenVLA), "normal" (mean/std) or "none"
    state_normalization: str = "normal"
    action_gripper_dims: tuple = ()  # action dims excluded from normalization (kept raw)
    state_gripper_dims: tuple = ()  # state dims excluded from normalization
    grounding_key: str | None = None  # per-step text naming where the target is (e.g. "<loc25>"), if recorded
    action_translation_dims: tuple = ()  # per arm, the 3 action dims of its end-effector translation delta
    notes: str = ""
    kind: str = "robot"

    def __post_init__(self):
        for field in ("action_normalization", "state_normalization"):
            if getattr(self, field) not in NORMALIZATIONS:
                raise DataError(f"spec '{self.name}': {field}={getattr(self, field)!r} is not one of {NORMALIZATIONS}")
        for field, dim in (("action_gripper_dims", self.action_dim), ("state_gripper_dims", self.state_dim)):
            bad = [d for d in getattr(self, field) if not 0 <= d < dim]
            if bad:
                raise DataError(f"spec '{self.name}': {field} {bad} outside [0, {dim})")
        for dims in self.action_translation_dims:
            if len(dims) != 3 or not all(0 <= d < self.action_dim for d in dims):
                raise DataError(f"spec '{self.name}': action_translation_dims entry {dims} must be 3 dims in "
                                f"[0, {self.action_dim})")

    def normalize_mask(self, which: str):
        """Boolean list, True where the dim is normalized (False for gripper-like dims)."""
        dim = self.action_dim if which == "action" else self.state_dim
        skip = set(self.action_gripper_dims if which == "action" else self.state_gripper_dims)
        return [d not in skip for d in range(dim)]

    def fingerprint(self) -> str:
        return _fingerprint(self)


@dataclasses.dataclass(frozen=True)
class WebSpec:
    """Layout of a web vision-language dataset (keys relative to one example)."""

    name: str
    image_key: str = "image"
    caption_key: str | None = "caption"
    question_key: str | None = "qa/question"  # sequence of questions
    answer_key: str | None = "qa/answer"  # sequence of answers, aligned with questions
    caption_prompt: str = "caption en"
    notes: str = ""
    kind: str = "web"

    def fingerprint(self) -> str:
        return _fingerprint(self)


_NOT_FINGERPRINTED = ("action_translation_dims",)  # read by evaluation metrics only: cached stats stay valid


def _fingerprint(spec) -> str:
    fields = {k: v for k, v in dataclasses.asdict(spec).items() if k not in _NOT_FINGERPRINTED}
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


SPECS: dict[str, RobotSpec | WebSpec] = {}


def register_spec(spec: RobotSpec | WebSpec) -> RobotSpec | WebSpec:
    SPECS[spec.name] = spec
    return spec


def get_spec(name: str, dataset: str = "") -> RobotSpec | WebSpec:
    if name not in SPECS:
        where = f"dataset '{dataset}': " if dataset else ""
        raise DataError(f"{where}unknown spec '{name}'; known specs: {sorted(SPECS)} (vla_jax/data/specs.py)")
    return SPECS[name]


# --- the simulated tabletop datasets written by vla_jax.data.generate -----------------

register_spec(RobotSpec(
    name="tabletop_single_arm",
    grounding_key="target_location",
    image_keys=("observation/image_0", "observation/image_1", None),  # overhead, wrist
    state_keys=("observation/state",),
    action_keys=("action",),
    instruction_key="language_instruction",
    action_dim=7, state_dim=8, control_hz=10.0,
    action_gripper_dims=(6,), state_gripper_dims=(6,), action_translation_dims=((0, 1, 2),),
    notes="vla_jax.sim single arm: 6-D end-effector delta + absolute gripper (0 open, 1 closed); "
          "state = xyz, roll, pitch, yaw, gripper aperture, aperture velocity.",
))

register_spec(RobotSpec(
    name="tabletop_bimanual",
    grounding_key="target_location",
    image_keys=("observation/image_0", "observation/image_1", "observation/image_2"),  # overhead, L, R wrist
    state_keys=("observation/state",),
    action_keys=("action",),
    instruction_key="language_instruction",
    action_dim=14, state_dim=14, control_hz=20.0,
    action_gripper_dims=(6, 13), state_gripper_dims=(6, 13), action_translation_dims=((0, 1, 2), (7, 8, 9)),
    notes="vla_jax.sim bimanual: per arm 6 + gripper, left then right.",
))

register_spec(WebSpec(name="tabletop_web_vl", notes="vla_jax.sim rendered scenes with captions and QA pairs."))

# --- real Open X-Embodiment layouts ------------------------------------------------------

register_spec(RobotSpec(
    name="bridge_dataset",
    image_keys=("observation/image_0", None, None),  # image_1..image_3 are other third-person views
    state_keys=("observation/state",),
    action_keys=("action",),
    instruction_key="language_instruction",
    action_dim=7, state_dim=7, control_hz=5.0,
    action_gripper_dims=(6,), state_gripper_dims=(6,), action_translation_dims=((0, 1, 2),),
    notes="BridgeData V2 (rail-berkeley release): action = 6-D EEF delta + gripper in [0, 1]; "
          "state = EEF xyz + euler + gripper; 256x256 images image_0..image_3.",
))

register_spec(RobotSpec(
    name="fractal20220817_data",
    image_keys=("observation/image", None, None),
    state_keys=("observation/base_pose_tool_reached", "observation/gripper_closed"),
    action_keys=("action/world_vector", "action/rotation_delta", "action/gripper_closedness_action"),
    instruction_key="observation/natural_language_instruction",
    action_dim=7, state_dim=8, control_hz=3.0,
    action_gripper_dims=(6,), state_gripper_dims=(7,), action_translation_dims=((0, 1, 2),),
    notes="RT-1 (Google robot): action is a dict; gripper_closedness_action in [-1, 1]; images 256x320.",
))

register_spec(RobotSpec(
    name="droid",
    image_keys=("observation/exterior_image_1_left", "observation/wrist_image_left", None),
    state_keys=("observation/cartesian_position", "observation/gripper_position"),
    action_keys=("action_dict/cartesian_velocity", "action_dict/gripper_position"),
    instruction_key="language_instruction",
    action_dim=7, state_dim=7, control_hz=15.0,
    action_gripper_dims=(6,), state_gripper_dims=(6,),
    notes="DROID: Franka; exterior_image_2_left is unused (slot 2 is reserved for a right wrist); "
          "language_instruction_2/_3 are alternative phrasings; images 180x320.",
))

register_spec(RobotSpec(
    name="aloha",
    image_keys=("observation/cam_high", "observation/cam_left_wrist", "observation/cam_right_wrist"),
    state_keys=("observation/state",),
    action_keys=("action",),
    instruction_key="language_instruction",
    action_dim=14, state_dim=14, control_hz=50.0,
    action_normalization="normal",
    action_gripper_dims=(6, 13), state_gripper_dims=(6, 13),
    notes="ALOHA bimanual (aloha_mobile / aloha_static style OXE releases): 14-D joint positions "
          "(6 joints + gripper per arm, left then right); cam_low is unused.",
))

# --- LeRobotDataset layouts (kind="lerobot", vla_jax/data/lerobot.py): keys are feature names of meta/info.json ----

register_spec(RobotSpec(
    name="lerobot_aloha",
    image_keys=("observation.images.cam_high", "observation.images.cam_left_wrist",
                "observation.images.cam_right_wrist"),
    state_keys=("observation.state",),
    action_keys=("action",),
    instruction_key="task_index",
    action_dim=14, state_dim=14, control_hz=50.0,
    action_normalization="normal",
    action_gripper_dims=(6, 13), state_gripper_dims=(6, 13),
    notes="LeRobot ALOHA (lerobot/aloha_static_* style): 14-D joint positions (6 joints + gripper per arm, left "
          "then right); observation.images.cam_low and observation.effort are unused.",
))
