"""Per-dataset standardization specs: how a dataset's own keys map onto the batch format.

Robot datasets (RLDS episodes) and web vision-language datasets each have a spec
kind. A spec says where things live inside one *step* (robot) or one *example*
(web); key paths use ``/`` for nesting, exactly as TFDS flattens feature names
(``observation/image_0``, ``action/world_vector``).

Camera slots are fixed across datasets so that a model sees the same kind of
view in the same slot: slot 0 = primary / overhead / third-person camera,
slot 1 = wrist (left wrist for bimanual), slot 2 = right wrist. A dataset that
lacks a view leaves the slot ``None`` and the pipeline masks it out.

State, action and instruction entries are column expressions (vla_jax/data/columns.py): a step key,
a slice ``key[a:b]``, a constant ``zeros(N)`` / ``ones(N)`` or a named conversion ``fn(expr)`` (gripper
inversion, relative -> absolute gripper, quaternion -> Euler, ...), so a dataset's own encoding is
converted to the common one by its spec alone.

Add a dataset by adding an entry to :data:`SPECS` (or call :func:`register_spec`)
and naming it as ``spec`` in ``config.data.datasets``. The Open X-Embodiment datasets are registered
by vla_jax/data/oxe_specs.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from vla_jax.data import columns
from vla_jax.data.errors import DataError

NORMALIZATIONS = ("bounds_q99", "normal", "none")


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """Layout of an RLDS robot dataset (keys relative to one step)."""

    name: str
    image_keys: tuple  # per camera slot: key path or None, e.g. ("observation/image_0", None, None)
    state_keys: tuple  # column expressions concatenated in order into the state vector (() = no state)
    action_keys: tuple  # column expressions concatenated in order into the action vector
    instruction_key: str  # "language_instruction", "observation/natural_language_instruction" or a text conversion
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
        try:
            columns.check(self.state_keys + self.action_keys)
            columns.check((self.instruction_key,), text=True)
        except DataError as e:
            raise DataError(f"spec '{self.name}': {e}") from None
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

    def action_rows(self, column: columns.Column, num_steps: int, start: int = 0, stop: int | None = None):
        """[stop - start, action_dim] float32 actions of steps [start, stop) of one episode (``column``:
        step key -> the episode's flat raw values)."""
        return columns.rows(self.action_keys, column, num_steps, start, stop)

    def state_rows(self, column: columns.Column, num_steps: int, start: int = 0, stop: int | None = None):
        """[stop - start, state_dim] float32 states of steps [start, stop) of one episode."""
        return columns.rows(self.state_keys, column, num_steps, start, stop)

    def instruction(self, column: columns.Column, num_steps: int, t: int) -> str:
        """The instruction of step ``t`` of one episode."""
        return columns.text(self.instruction_key, column, num_steps, t)

    def step_keys(self) -> list[str]:
        """Every step key the spec reads (cameras, state, action, instruction), in that order, once each."""
        paths = [k for k in self.image_keys if k is not None]
        for expr in self.state_keys + self.action_keys + (self.instruction_key,):
            paths += [key.path for key in columns.keys(expr)]
        return list(dict.fromkeys(paths))

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

# --- Meta-World scripted demonstrations written by vla_jax.data.generate_metaworld ----------------------------

register_spec(RobotSpec(
    name="metaworld",
    image_keys=("observation/corner2", "observation/gripperPOV", None),  # third-person, wrist
    state_keys=("observation/state",),
    action_keys=("action",),
    instruction_key="language_instruction",
    action_dim=4, state_dim=4, control_hz=80.0,
    action_gripper_dims=(3,), state_gripper_dims=(3,), action_translation_dims=((0, 1, 2),),
    notes="Meta-World v3 (Sawyer, MuJoCo): end-effector xyz delta in [-1, 1] (scaled by the env) + gripper effort "
          "(-1 open .. 1 close); state = end-effector xyz + gripper opening.",
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
