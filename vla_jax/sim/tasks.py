"""Task families, instructions, held-out splits, task-conditioned scene layout and success checks.

Families: ``pick`` (lift the target above LIFT_HEIGHT and hold it), ``place`` (target released
inside the named bowl), ``push`` (target slid >= PUSH_DISTANCE in the named direction, more along
it than across it, still on the table). Directions are in the world frame: left = -x,
right = +x, front = -y (toward the robot bases, bottom of the overhead image), back = +y.

Held-out splits (for generalization evaluation):
- HELDOUT_COMBOS: color/kind combinations that ``split="train"`` never uses, neither as target,
  container nor distractor. ``split="heldout_combo"`` makes the target (or, for place, the target
  and/or the bowl) one of them, with a training paraphrase.
- HELDOUT_PARAPHRASES: template indices per family that ``split="train"`` never uses;
  ``split="heldout_paraphrase"`` uses only them, with training combos.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vla_jax.sim.world import (
    COLOR_NAMES,
    CONTAINER_KINDS,
    GRASPABLE_KINDS,
    GRIPPER_RADIUS,
    OBJECT_KINDS,
    SceneObject,
    World,
    contact_radius,
)

FAMILIES = ("pick", "place", "push")
SPLITS = ("train", "heldout_combo", "heldout_paraphrase")
DIRECTIONS: dict[str, tuple[float, float]] = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "front": (0.0, -1.0), "back": (0.0, 1.0)}
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "pick": (
        "pick up the {object}",
        "grab the {object}",
        "lift the {object}",
        "pick the {object} up off the table",
        "raise the {object} into the air",
    ),
    "place": (
        "put the {object} in the {container}",
        "place the {object} into the {container}",
        "move the {object} into the {container}",
        "drop the {object} in the {container}",
        "transfer the {object} to the {container}",
    ),
    "push": (
        "push the {object} to the {direction}",
        "slide the {object} to the {direction}",
        "nudge the {object} toward the {direction}",
        "shove the {object} to the {direction}",
        "move the {object} over to the {direction} by pushing it",
    ),
}
HELDOUT_PARAPHRASES: dict[str, tuple[int, ...]] = {family: (4,) for family in FAMILIES}
HELDOUT_COMBOS: frozenset[tuple[str, str]] = frozenset({("purple", "cup"), ("orange", "block"), ("yellow", "bowl")})

LIFT_HEIGHT = 0.05  # pick: held object's bottom must be at least this high [m]
PUSH_DISTANCE = 0.08  # push: required displacement along the direction [m]
DISTURB_DISTANCE = 0.04  # push: moving another object this far is a failure [m]
_SIZES = {"block": (0.03, 0.038), "cup": (0.03, 0.036), "bowl": (0.06, 0.074)}
_PLACE_HALF = 0.22  # objects start with |x|, |y| <= this
_GAP = 0.035  # min clearance between starting objects [m]
PUSH_APPROACH = 0.035  # clearance behind the target where a push starts [m]


@dataclass(frozen=True)
class Task:
    """One instruction. ``container_color`` is set for place (the container is a bowl), ``direction`` for push."""

    family: str
    object_color: str
    object_kind: str
    container_color: str | None
    direction: str | None
    instruction: str
    paraphrase: int


def make_task(
    family: str,
    object_color: str,
    object_kind: str,
    container_color: str | None = None,
    direction: str | None = None,
    paraphrase: int = 0,
) -> Task:
    """Builds a Task, writing its instruction from template ``paraphrase`` of the family."""
    if family not in FAMILIES or object_kind not in GRASPABLE_KINDS or object_color not in COLOR_NAMES:
        raise ValueError(f"bad task: {family} {object_color} {object_kind}")
    if (family == "place") != (container_color is not None) or (family == "push") != (direction is not None):
        raise ValueError("place needs exactly a container_color, push exactly a direction")
    text = PARAPHRASES[family][paraphrase].format(
        object=f"{object_color} {object_kind}",
        container=f"{container_color} bowl",
        direction=direction,
    )
    return Task(family, object_color, object_kind, container_color, direction, text, paraphrase)


def _train_pairs(kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(c, k) for k in kinds for c in COLOR_NAMES if (c, k) not in HELDOUT_COMBOS]


def sample_task(rng: np.random.Generator, family: str | None = None, split: str = "train") -> Task:
    """Samples a task of ``family`` (uniform over families if None) from ``split`` (see module doc)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    family = family if family is not None else FAMILIES[rng.integers(len(FAMILIES))]
    held = HELDOUT_PARAPHRASES[family]
    templates = held if split == "heldout_paraphrase" else [i for i in range(len(PARAPHRASES[family])) if i not in held]
    paraphrase = int(templates[rng.integers(len(templates))])
    objects = _train_pairs(GRASPABLE_KINDS)
    bowls = [c for c, _ in _train_pairs(CONTAINER_KINDS)]
    if split == "heldout_combo":
        objects_all = [(c, k) for k in GRASPABLE_KINDS for c in COLOR_NAMES]
        while True:
            color, kind = objects_all[rng.integers(len(objects_all))]
            bowl = COLOR_NAMES[rng.integers(len(COLOR_NAMES))] if family == "place" else None
            if (color, kind) in HELDOUT_COMBOS or (bowl, "bowl") in HELDOUT_COMBOS:
                break
    else:
        color, kind = objects[rng.integers(len(objects))]
        bowl = bowls[rng.integers(len(bowls))] if family == "place" else None
    direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))] if family == "push" else None
    return make_task(family, color, kind, bowl, direction, paraphrase)


# ----------------------------------------------------------------------------- scenes


def _extent(kind: str, size: float) -> float:
    """Radius of a disc that covers the object's footprint in any rotation (cups: with handle)."""
    return {"block": 1.42, "cup": 1.3, "bowl": 1.0}[kind] * size


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    t = float(np.clip((p - a) @ (b - a) / max(float((b - a) @ (b - a)), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - a - t * (b - a)))


def push_corridor(task: Task, start: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(fingertip xy where the push starts, final target xy) [2] each, for a target of contact
    ``radius`` at ``start`` [2]."""
    direction = np.array(DIRECTIONS[task.direction])
    behind = start - direction * (radius + GRIPPER_RADIUS + PUSH_APPROACH)
    return behind, start + direction * (PUSH_DISTANCE + 0.06)


def _layout(task: Task, kinds: list[tuple[str, str]], sizes: list[float], rng: np.random.Generator):
    """Non-overlapping footprint centers [N, 2] (target first), or None after too many rejections."""
    placed: list[np.ndarray] = []
    corridor = None
    for i, ((_, kind), size) in enumerate(zip(kinds, sizes)):
        for _ in range(200):
            p = rng.uniform(-_PLACE_HALF, _PLACE_HALF, size=2)
            if i == 0 and task.family == "push":
                a, b = push_corridor(task, p, contact_radius(kind, size))
                if np.any(np.abs(a) > 0.27) or np.any(np.abs(b) > 0.25):
                    continue
                corridor = (a, b)
            clear = all(
                np.linalg.norm(p - q) >= _extent(kind, size) + _extent(k, s) + _GAP
                for q, (_, k), s in zip(placed, kinds, sizes)
            )
            if clear and corridor is not None and i > 0:
                clear = _segment_distance(p, *corridor) >= _extent(kind, size) + _extent(kinds[0][1], sizes[0]) + _GAP
            if clear:
                placed.append(p)
                break
        else:
            return None
    return np.array(placed)


def make_scene(task: Task, rng: np.random.Generator) -> tuple[list[SceneObject], int, int | None]:
    """Objects for ``task``: the target (index 0), the container (index 1, place only) and 0-3
    distractors with distinct (color, kind), none of them a held-out combo. Returns
    (objects, target index, container index or None). 2-4 objects in all."""
    kinds = [(task.object_color, task.object_kind)]
    if task.family == "place":
        kinds.append((task.container_color, "bowl"))
    total = int(rng.integers(max(2, len(kinds)), 5))
    while len(kinds) < total:
        if len(kinds) == 1 + (task.family == "place") and rng.random() < 0.5:
            kind = task.object_kind  # a same-kind distractor forces reading the color
        else:
            kind = OBJECT_KINDS[rng.integers(len(OBJECT_KINDS))]
        pair = (COLOR_NAMES[rng.integers(len(COLOR_NAMES))], kind)
        if pair not in kinds and pair not in HELDOUT_COMBOS:
            kinds.append(pair)
    while True:
        sizes = [float(rng.uniform(*_SIZES[k])) for _, k in kinds]
        positions = _layout(task, kinds, sizes, rng)
        if positions is not None:
            break
        if len(kinds) > 1 + (task.family == "place"):
            kinds.pop()
    objects = []
    for (color, kind), size, p in zip(kinds, sizes, positions):
        yaw = {"block": rng.uniform(-np.pi / 4, np.pi / 4), "cup": rng.uniform(-np.pi, np.pi), "bowl": 0.0}[kind]
        objects.append(SceneObject(color, kind, size, np.array([p[0], p[1], 0.0]), float(yaw)))
    return objects, 0, (1 if task.family == "place" else None)


# ----------------------------------------------------------------------------- success / failure


def task_success(world: World, task: Task, target: int, container: int | None) -> bool:
    """Whether the task is achieved in the current world state."""
    obj = world.objects[target]
    if obj.fallen:
        return False
    if task.family == "pick":
        return obj.held_by is not None and obj.pos[2] >= LIFT_HEIGHT
    if task.family == "place":
        return obj.held_by is None and obj.container == container
    moved = world.displacement(target)
    direction = np.array(DIRECTIONS[task.direction])
    along = float(moved @ direction)
    across = abs(float(moved[0] * direction[1] - moved[1] * direction[0]))
    on_table = obj.held_by is None and obj.container is None and obj.pos[2] == 0.0
    return on_table and along >= PUSH_DISTANCE and across < along


def task_failure(world: World, task: Task, target: int, container: int | None) -> str | None:
    """The mistake made so far while the task is not achieved, else None: "wrong_object" (another
    object lifted, or for push moved > DISTURB_DISTANCE), "off_table" (target fell off),
    "wrong_container" (place: released in another bowl), "dropped" (target lifted then released
    outside the goal), "lifted" (push: target picked up), "wrong_direction" (push: moved far, but
    not as asked)."""
    if task_success(world, task, target, container):
        return None
    obj = world.objects[target]
    if any(j != target for j in world.lifted):
        return "wrong_object"
    if obj.fallen:
        return "off_table"
    if task.family == "push":
        others = [j for j in range(len(world.objects)) if j != target]
        if any(np.linalg.norm(world.displacement(j)) > DISTURB_DISTANCE for j in others):
            return "wrong_object"
        if target in world.lifted:
            return "lifted"
        if np.linalg.norm(world.displacement(target)) >= PUSH_DISTANCE:
            return "wrong_direction"
        return None
    if task.family == "place" and obj.held_by is None and obj.container not in (None, container):
        return "wrong_container"
    if obj.held_by is None and target in world.lifted:
        return "dropped"
    return None
