"""Tabletop world state and physics: objects, arms with parallel grippers, grasp / release / push.

Frame: x to the right, y to the back (away from the robots' bases), z up, in meters. The table
top is the plane z = 0 with |x|, |y| <= TABLE_HALF. An object's ``pos`` [3] is the center of its
footprint and the height of its bottom; an arm's ``pos`` [3] is the point between its fingertips.

Rules (applied once per action by :meth:`World.step`):
- the end-effector moves by the clipped delta and is clipped to the workspace box;
- the gripper aperture (0 open, 1 closed) moves toward the command at a limited speed; when it
  crosses 0.5 upward near a graspable object (centered within GRASP_RADIUS, fingertips below the
  object's top) the object is grasped and then moves rigidly with the gripper;
- when it crosses 0.5 downward the held object drops straight down: into a bowl if its center is
  over the bowl, else onto the table (off the table edge it falls and is gone);
- a lowered gripper moving horizontally into an object pushes it along the motion; pushed
  objects push the objects they run into; bowls carry their contents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

COLOR_NAMES = ("red", "green", "blue", "yellow", "purple", "orange")
GRASPABLE_KINDS = ("block", "cup")
CONTAINER_KINDS = ("bowl",)
OBJECT_KINDS = GRASPABLE_KINDS + CONTAINER_KINDS

TABLE_HALF = 0.3
EE_LOW = np.array([-TABLE_HALF, -TABLE_HALF, 0.005])
EE_HIGH = np.array([TABLE_HALF, TABLE_HALF, 0.3])
CUP_HEIGHT = 0.065
BOWL_HEIGHT = 0.04
BOWL_FLOOR = 0.01  # bottom height of an object resting in a bowl
GRIPPER_RADIUS = 0.02  # horizontal contact radius of the fingers when pushing
GRASP_RADIUS = 0.028  # max horizontal fingertip-to-object-center distance for a grasp
FINGER_OPEN = 0.05  # finger offset from the gripper center when fully open
FINGER_CLOSED = 0.012  # finger offset when closed on nothing
LIFTED_TRACK = 0.02  # a held object whose bottom rises above this counts as lifted (bookkeeping)
_CHAIN_DEPTH = 3


@dataclass
class SceneObject:
    """A block, cup (graspable) or bowl (container) on the table.

    ``size`` is the half side of a block's square footprint or the radius of a cup / bowl.
    ``held_by`` is the index of the arm holding it, ``container`` the index of the bowl it is in.
    """

    color: str
    kind: str
    size: float
    pos: np.ndarray
    yaw: float = 0.0
    held_by: int | None = None
    container: int | None = None
    fallen: bool = False

    @property
    def height(self) -> float:
        return {"block": 2.0 * self.size, "cup": CUP_HEIGHT, "bowl": BOWL_HEIGHT}[self.kind]

    @property
    def top(self) -> float:
        return float(self.pos[2]) + self.height

    @property
    def radius(self) -> float:
        return contact_radius(self.kind, self.size)

    @property
    def graspable(self) -> bool:
        return self.kind in GRASPABLE_KINDS


@dataclass
class Arm:
    """One end-effector. ``base`` is where the arm is mounted (only drawn, never collides)."""

    pos: np.ndarray
    yaw: float = 0.0
    aperture: float = 0.0
    aperture_vel: float = 0.0
    base: tuple[float, float, float] = (0.0, -0.42, 0.3)
    held: int | None = None
    grasp_offset: np.ndarray = field(default_factory=lambda: np.zeros(3))  # gripper frame dx, dy; dz down
    grasp_yaw: float = 0.0


def contact_radius(kind: str, size: float) -> float:
    """Radius [m] of the disc used for contacts (a block counts as slightly rounder than its side)."""
    return 1.1 * size if kind == "block" else size


def wrap_angle(a: float) -> float:
    """Wraps an angle to [-pi, pi)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def _rot(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s], [s, c]])


class World:
    """Mutable world state; ``objects`` and ``arms`` are plain lists that tests may edit directly.

    ``initial_xy`` [N, 2] holds the objects' starting footprint centers and ``lifted`` the indices
    of objects that have ever been held above LIFTED_TRACK; both feed the task failure checks.
    """

    def __init__(self, objects: list[SceneObject], arms: list[Arm]):
        self.objects = objects
        self.arms = arms
        self.initial_xy = np.array([o.pos[:2] for o in objects], dtype=np.float64).reshape(-1, 2)
        self.lifted: set[int] = set()

    def step(self, actions: np.ndarray, max_step: float, max_rot: float, gripper_speed: float) -> None:
        """Applies one action per arm. actions: [num_arms, 7] = dxyz, droll/dpitch (ignored), dyaw, gripper."""
        for i, (arm, a) in enumerate(zip(self.arms, np.asarray(actions, dtype=np.float64))):
            prev_xy = arm.pos[:2].copy()
            arm.pos = np.clip(arm.pos + np.clip(a[:3], -max_step, max_step), EE_LOW, EE_HIGH)
            arm.yaw = wrap_angle(arm.yaw + float(np.clip(a[5], -max_rot, max_rot)))
            old = arm.aperture
            command = float(np.clip(a[6], 0.0, 1.0))
            arm.aperture = old + float(np.clip(command - old, -gripper_speed, gripper_speed))
            arm.aperture_vel = arm.aperture - old
            self._push(arm, prev_xy)
            if old < 0.5 <= arm.aperture and arm.held is None:
                self.grasp(i)
            elif arm.aperture < 0.5 <= old and arm.held is not None:
                self.release(i)
            self._carry(arm)

    def grasp(self, arm_index: int) -> int | None:
        """Attaches the graspable object nearest to the fingertips, if one is in reach; returns its index."""
        arm = self.arms[arm_index]
        best, best_dist = None, GRASP_RADIUS
        for j, obj in enumerate(self.objects):
            if not obj.graspable or obj.fallen or obj.held_by is not None:
                continue
            dist = float(np.linalg.norm(obj.pos[:2] - arm.pos[:2]))
            if dist < best_dist and obj.pos[2] <= arm.pos[2] < obj.top - 0.01:
                best, best_dist = j, dist
        if best is not None:
            obj = self.objects[best]
            obj.held_by, obj.container = arm_index, None
            arm.held = best
            local = _rot(-arm.yaw) @ (obj.pos[:2] - arm.pos[:2])
            arm.grasp_offset = np.array([local[0], local[1], arm.pos[2] - obj.pos[2]])
            arm.grasp_yaw = obj.yaw - arm.yaw
        return best

    def release(self, arm_index: int) -> None:
        """Drops the held object straight down into the bowl below it, onto the table, or off the edge."""
        arm = self.arms[arm_index]
        obj = self.objects[arm.held]
        arm.held, obj.held_by = None, None
        for j, bowl in enumerate(self.objects):
            if bowl.kind in CONTAINER_KINDS and not bowl.fallen and np.linalg.norm(obj.pos[:2] - bowl.pos[:2]) < bowl.size:
                obj.container = j
                obj.pos[2] = bowl.pos[2] + BOWL_FLOOR
                return
        obj.pos[2] = 0.0
        obj.fallen = bool(np.any(np.abs(obj.pos[:2]) > TABLE_HALF))

    def finger_offset(self, arm_index: int) -> float:
        """Distance [m] of each finger from the gripper center; closed fingers stop at a held object."""
        arm = self.arms[arm_index]
        offset = FINGER_CLOSED + (FINGER_OPEN - FINGER_CLOSED) * (1.0 - arm.aperture)
        if arm.held is not None:
            offset = max(offset, self.objects[arm.held].size + 0.006)
        return offset

    def displacement(self, index: int) -> np.ndarray:
        """[2] xy displacement of an object since the start of the episode."""
        return self.objects[index].pos[:2] - self.initial_xy[index]

    def _carry(self, arm: Arm) -> None:
        if arm.held is None:
            return
        obj = self.objects[arm.held]
        obj.pos[:2] = arm.pos[:2] + _rot(arm.yaw) @ arm.grasp_offset[:2]
        obj.pos[2] = max(arm.pos[2] - arm.grasp_offset[2], 0.0)
        obj.yaw = wrap_angle(arm.yaw + arm.grasp_yaw)
        if obj.pos[2] > LIFTED_TRACK:
            self.lifted.add(arm.held)

    def _pushable(self, j: int, exclude: int | None = None) -> bool:
        obj = self.objects[j]
        return j != exclude and not obj.fallen and obj.held_by is None and obj.container is None

    def _push(self, arm: Arm, prev_xy: np.ndarray) -> None:
        motion = arm.pos[:2] - prev_xy
        length = float(np.linalg.norm(motion))
        if length < 1e-9:
            return
        direction = motion / length
        for j, obj in enumerate(self.objects):
            if not self._pushable(j) or arm.pos[2] >= obj.top:
                continue
            contact = obj.radius + GRIPPER_RADIUS
            if np.linalg.norm(obj.pos[:2] - prev_xy) < contact - 1e-6:
                continue  # the object was already between the fingers: no push
            shift = _swept_push(obj.pos[:2] - prev_xy, direction, length, contact)
            if shift > 0.0:
                self._displace(j, direction * shift, 0)

    def _displace(self, j: int, delta: np.ndarray, depth: int) -> None:
        obj = self.objects[j]
        start = obj.pos[:2].copy()
        moved = [obj] + [other for other in self.objects if other.container == j]
        for other in moved:
            other.pos[:2] += delta
        if np.any(np.abs(obj.pos[:2]) > TABLE_HALF):
            for other in moved:
                other.fallen = True
            return
        if depth >= _CHAIN_DEPTH:
            return
        length = float(np.linalg.norm(delta))
        for k, other in enumerate(self.objects):
            if not self._pushable(k, exclude=j):
                continue
            shift = _swept_push(other.pos[:2] - start, delta / length, length, other.radius + obj.radius)
            if shift > 0.0:
                self._displace(k, delta / length * shift, depth + 1)


def _swept_push(rel: np.ndarray, direction: np.ndarray, length: float, contact: float) -> float:
    """How far a disc at ``rel`` [2] (relative to the pusher's start) is pushed along unit ``direction``
    when the pusher travels ``length`` and they touch at center distance ``contact``: it ends just
    touching the pusher, ahead of it. 0 if the pusher's path misses it or it is behind."""
    along = float(rel @ direction)
    across2 = float(rel @ rel) - along * along
    if along <= 0.0 or across2 >= contact * contact:
        return 0.0
    touch = along - math.sqrt(contact * contact - across2)
    return max(0.0, length - touch)
