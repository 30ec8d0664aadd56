"""Pure-numpy rasterizer and downward-looking pinhole cameras that draw a World as uint8 RGB images.

A camera looks straight down (-z). Image columns grow along the camera's +x axis and rows along
its -y axis, so with yaw 0 the overhead view shows the table's back at the top and the robot side
at the bottom. Things nearer the camera are drawn larger; held objects and grippers cast a shadow
on the table offset by LIGHT * height, so height is visible from above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from vla_jax.sim.world import TABLE_HALF, Arm, SceneObject, World

RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 160, 55),
    "blue": (40, 80, 225),
    "yellow": (240, 205, 25),
    "purple": (140, 55, 190),
    "orange": (250, 130, 20),
}
TABLE_RGB = np.array([206, 202, 194], dtype=np.uint8)
FLOOR_RGB = np.array([70, 62, 56], dtype=np.uint8)
SHADOW_RGB = np.array([150, 146, 140], dtype=np.uint8)
ARM_RGB = np.array([70, 74, 90], dtype=np.uint8)
ARM_ALPHA = 0.55  # the arm link is see-through so it never hides the objects under it
HUB_RGB = np.array([90, 94, 104], dtype=np.uint8)
GRIPPER_RGB = np.array([30, 30, 34], dtype=np.uint8)
LIGHT = np.array([0.35, -0.25])  # shadow offset per meter of height
_MIN_DEPTH = 0.02


@dataclass(frozen=True)
class CameraSpec:
    """A downward-looking camera.

    mount "fixed": at (center, height) above the table. mount "wrist": ``height`` above the
    fingertips of arm ``arm``, turning with the gripper's yaw. ``fov`` is the visible width per
    meter of depth (2 tan(half field of view)).
    """

    name: str
    mount: str = "fixed"
    arm: int = 0
    center: tuple[float, float] = (0.0, 0.0)
    height: float = 0.8
    fov: float = 0.7
    yaw: float = 0.0


def shade(color, factor: float) -> np.ndarray:
    """Color scaled by ``factor`` (darker < 1)."""
    return np.clip(np.asarray(color, dtype=np.float32) * factor, 0, 255).astype(np.uint8)


def tint(color, white: float) -> np.ndarray:
    """Color mixed with white by fraction ``white``."""
    return np.clip(np.asarray(color, dtype=np.float32) * (1 - white) + 255 * white, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- rasterizer
# Shapes are given in pixel coordinates (col, row); pixel (i, j) has its center at (j + .5, i + .5).
# Angles are counter-clockwise as seen in the image (rows point down, so "up" is -row).


def _window(img: np.ndarray, cx: float, cy: float, reach: float):
    """Rows/cols slices covering a disc of radius ``reach`` and the pixel-center offsets dx [1,w], dy [h,1]."""
    height, width = img.shape[:2]
    r0, r1 = max(math.floor(cy - reach), 0), min(math.ceil(cy + reach) + 1, height)
    c0, c1 = max(math.floor(cx - reach), 0), min(math.ceil(cx + reach) + 1, width)
    if r0 >= r1 or c0 >= c1:
        return None
    dx = (np.arange(c0, c1, dtype=np.float32) + 0.5 - cx)[None, :]
    dy = (np.arange(r0, r1, dtype=np.float32) + 0.5 - cy)[:, None]
    return (slice(r0, r1), slice(c0, c1)), dx, dy


def fill_disc(img: np.ndarray, cx: float, cy: float, radius: float, color) -> None:
    """Fills a disc in place. img: uint8 [H, W, 3]."""
    win = _window(img, cx, cy, radius)
    if win is not None:
        sl, dx, dy = win
        img[sl][dx * dx + dy * dy <= radius * radius] = color


def fill_rect(img: np.ndarray, cx: float, cy: float, half_w: float, half_h: float, angle: float, color) -> None:
    """Fills a rectangle with half sizes (half_w, half_h) rotated by ``angle`` in place."""
    win = _window(img, cx, cy, math.hypot(half_w, half_h))
    if win is not None:
        sl, dx, dy = win
        c, s = math.cos(angle), math.sin(angle)
        u = dx * c - dy * s
        v = -dx * s - dy * c
        img[sl][(np.abs(u) <= half_w) & (np.abs(v) <= half_h)] = color


def fill_polygon(img: np.ndarray, points: np.ndarray, color) -> None:
    """Fills a convex polygon (points [K, 2] of (col, row), either winding) in place."""
    points = np.asarray(points, dtype=np.float32)
    center = points.mean(axis=0)
    win = _window(img, float(center[0]), float(center[1]), float(np.linalg.norm(points - center, axis=1).max()))
    if win is None:
        return
    sl, dx, dy = win
    inside = np.ones(np.broadcast_shapes(dx.shape, dy.shape), dtype=bool)
    rel = points - center
    for a, b in zip(rel, np.roll(rel, -1, axis=0)):
        cross = (b[0] - a[0]) * (dy - a[1]) - (b[1] - a[1]) * (dx - a[0])
        sign = (b[0] - a[0]) * (-a[1]) - (b[1] - a[1]) * (-a[0])  # the center is inside
        inside &= cross * sign >= 0
    img[sl][inside] = color


def fill_capsule(img: np.ndarray, p0, p1, radius: float, color, alpha: float = 1.0) -> None:
    """Fills a thick line segment with round ends between pixel points p0 and p1 in place,
    blending ``alpha`` of ``color`` over what is there."""
    (x0, y0), (x1, y1) = p0, p1
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    win = _window(img, cx, cy, math.hypot(x1 - x0, y1 - y0) / 2 + radius)
    if win is None:
        return
    sl, dx, dy = win
    ex, ey = x1 - x0, y1 - y0
    px, py = dx + (cx - x0), dy + (cy - y0)
    t = np.clip((px * ex + py * ey) / max(ex * ex + ey * ey, 1e-9), 0.0, 1.0)
    qx, qy = px - t * ex, py - t * ey
    region = img[sl]
    mask = qx * qx + qy * qy <= radius * radius
    region[mask] = (region[mask] * (1.0 - alpha) + np.asarray(color, dtype=np.float32) * alpha).astype(np.uint8)


# ----------------------------------------------------------------------------- cameras


@dataclass(frozen=True)
class _View:
    """A camera posed in the world: position (x, y, z), yaw and focal length f [pixels per unit slope]."""

    x: float
    y: float
    z: float
    yaw: float
    f: float
    half: float

    def project(self, x: float, y: float, z: float):
        """(col, row, pixels per meter) of a world point, or None if it is not below the camera."""
        depth = self.z - z
        if depth < _MIN_DEPTH:
            return None
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        dx, dy = x - self.x, y - self.y
        scale = self.f / depth
        return self.half + (c * dx + s * dy) * scale, self.half - (-s * dx + c * dy) * scale, scale


def _pose(spec: CameraSpec, world: World, size: int) -> _View:
    f = size / spec.fov
    if spec.mount == "wrist":
        arm = world.arms[spec.arm]
        return _View(float(arm.pos[0]), float(arm.pos[1]), float(arm.pos[2]) + spec.height, arm.yaw, f, size / 2)
    return _View(spec.center[0], spec.center[1], spec.height, spec.yaw, f, size / 2)


def image_coords(world: World, spec: CameraSpec, xyz: tuple[float, float, float]) -> tuple[float, float] | None:
    """Where world point ``xyz`` appears in camera ``spec``'s image, as (column, row) fractions of the
    image size (in [0, 1] when visible), or None if the point is not below the camera."""
    p = _pose(spec, world, 1.0).project(*xyz)
    return None if p is None else (p[0], p[1])


def _draw_table(img: np.ndarray, view: _View) -> None:
    img[:] = FLOOR_RGB
    col, row, scale = view.project(0.0, 0.0, 0.0)
    fill_rect(img, col, row, TABLE_HALF * scale, TABLE_HALF * scale, -view.yaw, TABLE_RGB)


@lru_cache(maxsize=32)
def _fixed_background(spec: CameraSpec, size: int) -> np.ndarray:
    img = np.empty((size, size, 3), dtype=np.uint8)
    _draw_table(img, _pose(spec, World([], []), size))
    img.setflags(write=False)
    return img


def _footprint(img: np.ndarray, view: _View, obj: SceneObject, x: float, y: float, z: float, scale_by: float, color) -> None:
    p = view.project(x, y, z)
    if p is None:
        return
    col, row, scale = p
    if obj.kind == "block":
        half = obj.size * scale * scale_by
        fill_rect(img, col, row, half, half, obj.yaw - view.yaw, color)
    else:
        fill_disc(img, col, row, obj.size * scale * scale_by, color)


def _draw_shadow(img: np.ndarray, view: _View, obj: SceneObject) -> None:
    z = float(obj.pos[2])
    if z > 0.003 and obj.container is None:
        x, y = obj.pos[:2] + LIGHT * z
        _footprint(img, view, obj, x, y, 0.0, 1.0, SHADOW_RGB)


def _draw_object(img: np.ndarray, view: _View, obj: SceneObject) -> None:
    p = view.project(obj.pos[0], obj.pos[1], obj.top)
    if p is None:
        return
    col, row, scale = p
    base = RGB[obj.color]
    dark = shade(base, 0.62)
    r = obj.size * scale
    angle = obj.yaw - view.yaw
    if obj.kind == "block":
        fill_rect(img, col, row, r, r, angle, dark)
        inner = r - max(1.0, 0.22 * r)
        fill_rect(img, col, row, inner, inner, angle, base)
    elif obj.kind == "cup":
        hx, hy = col + math.cos(angle) * 1.05 * r, row - math.sin(angle) * 1.05 * r
        fill_rect(img, hx, hy, 0.4 * r, 0.22 * r + 0.5, angle, dark)
        fill_disc(img, col, row, r, dark)
        fill_disc(img, col, row, 0.78 * r, base)
        fill_disc(img, col, row, 0.42 * r, shade(base, 0.45))
    else:
        fill_disc(img, col, row, r, dark)
        fill_disc(img, col, row, 0.9 * r, base)
        fill_disc(img, col, row, 0.66 * r, tint(base, 0.55))


def _gripper_point(arm: Arm, lx: float, ly: float) -> tuple[float, float]:
    c, s = math.cos(arm.yaw), math.sin(arm.yaw)
    return float(arm.pos[0] + c * lx - s * ly), float(arm.pos[1] + s * lx + c * ly)


def _draw_arm_link(img: np.ndarray, view: _View, arm: Arm) -> None:
    base = view.project(*arm.base)
    hub = view.project(*_gripper_point(arm, 0.0, -0.03), float(arm.pos[2]) + 0.06)
    if base is None or hub is None:
        return
    fill_capsule(img, base[:2], hub[:2], 0.012 * hub[2] + 0.5, ARM_RGB, alpha=ARM_ALPHA)


def _draw_fingers(img: np.ndarray, view: _View, arm: Arm, offset: float, z: float) -> None:
    for side in (-1.0, 1.0):
        p = view.project(*_gripper_point(arm, side * offset, 0.0), z)
        if p is not None:
            fill_rect(img, p[0], p[1], 0.007 * p[2] + 0.5, 0.014 * p[2] + 0.5, arm.yaw - view.yaw, GRIPPER_RGB)


def _draw_gripper(img: np.ndarray, view: _View, arm: Arm, offset: float) -> None:
    """A U-shaped claw seen from above: hub, bar and two fingers whose spacing shows the aperture."""
    z = float(arm.pos[2]) + 0.035
    bar = view.project(*_gripper_point(arm, 0.0, -0.018), z)
    hub = view.project(*_gripper_point(arm, 0.0, -0.03), z)
    if bar is None or hub is None:
        return
    fill_disc(img, hub[0], hub[1], 0.012 * hub[2] + 0.5, HUB_RGB)
    fill_rect(img, bar[0], bar[1], (offset + 0.007) * bar[2], 0.006 * bar[2] + 0.5, arm.yaw - view.yaw, GRIPPER_RGB)
    _draw_fingers(img, view, arm, offset, z)


def _draw_gripper_shadow(img: np.ndarray, view: _View, arm: Arm) -> None:
    x, y = arm.pos[:2] + LIGHT * float(arm.pos[2])
    p = view.project(x, y, 0.0)
    if p is not None:
        fill_disc(img, p[0], p[1], 0.022 * p[2], SHADOW_RGB)


def render(world: World, spec: CameraSpec, size: int = 96) -> np.ndarray:
    """Draws the world from camera ``spec``. Returns uint8 [size, size, 3]."""
    view = _pose(spec, world, size)
    if spec.mount == "fixed":
        img = _fixed_background(spec, size).copy()
    else:
        img = np.empty((size, size, 3), dtype=np.uint8)
        _draw_table(img, view)
    visible = [o for o in world.objects if not o.fallen]
    for arm in world.arms:
        _draw_gripper_shadow(img, view, arm)
    for obj in visible:
        _draw_shadow(img, view, obj)
    for obj in sorted(visible, key=lambda o: (o.held_by is not None, o.top)):
        _draw_object(img, view, obj)
    for i, arm in enumerate(world.arms):
        offset = world.finger_offset(i)
        if spec.mount == "wrist" and i == spec.arm:
            _draw_fingers(img, view, arm, offset, float(arm.pos[2]) + 0.01)
            continue
        if spec.mount == "fixed":
            _draw_arm_link(img, view, arm)
        _draw_gripper(img, view, arm, offset)
    return img
