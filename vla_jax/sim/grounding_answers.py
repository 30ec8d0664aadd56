"""Where the named object is, as one location token: grounding supervision for the policy's backbone.

The image of a camera is cut into a GRID x GRID grid; ``<locRC>`` names the cell in row R (from the
top) and column C (from the left), as PaliGemma's ``<locNNNN>`` tokens name detection coordinates.
Demonstrations record the token of the task's target object in the primary (overhead) camera at
every step at which no gripper has reached it (there the answer would be "where the gripper is", a
shortcut that teaches nothing about the instruction; those steps record ""), and web VL examples ask
"where is the red cup?" with the same tokens as answers, so
"which pixels does 'the red cup' refer to" is taught by a classification loss instead of having to
be discovered through the action loss alone (the "embodied chain of thought" idea, Zawalski et al.
2024, here as an auxiliary target that the action expert never sees; docs/experiments.md).
"""

from __future__ import annotations

import numpy as np

from vla_jax.sim.render import CameraSpec, image_coords
from vla_jax.sim.world import World

GRID = 8
REACHED = 0.06  # [m] a gripper this close (horizontally) to the target, or holding it, has reached it
LOCATION_TOKENS: tuple[str, ...] = tuple(f"<loc{r}{c}>" for r in range(GRID) for c in range(GRID))


def location_token(u: float, v: float) -> str:
    """Token of the cell holding image point (u, v) in [0, 1]^2 (u: column / width, v: row / height);
    points outside the image go to the nearest border cell."""
    col = int(np.clip(np.floor(u * GRID), 0, GRID - 1))
    row = int(np.clip(np.floor(v * GRID), 0, GRID - 1))
    return f"<loc{row}{col}>"


def object_uv(world: World, spec: CameraSpec, index: int) -> tuple[float, float] | None:
    """Image point (u, v) in [0, 1]^2 of object ``index``'s top center as camera ``spec`` sees it
    (vla_jax.sim.render.image_coords; None if it is not below the camera)."""
    obj = world.objects[index]
    return image_coords(world, spec, (float(obj.pos[0]), float(obj.pos[1]), obj.top))


def object_location(world: World, spec: CameraSpec, index: int) -> str:
    """Location token of object ``index``'s top center as camera ``spec`` sees it."""
    uv = object_uv(world, spec, index)
    return location_token(*uv) if uv is not None else location_token(0.5, 0.5)


def reached(world: World, index: int) -> bool:
    """Whether a gripper holds object ``index`` or is within REACHED of it horizontally."""
    obj = world.objects[index]
    near = any(float(np.linalg.norm(arm.pos[:2] - obj.pos[:2])) < REACHED for arm in world.arms)
    return obj.held_by is not None or obj.container is not None or near


def grounding_answer(world: World, spec: CameraSpec, index: int) -> str:
    """The target's location token while no gripper has reached it, else "" (no grounding answer)."""
    return "" if reached(world, index) else object_location(world, spec, index)
