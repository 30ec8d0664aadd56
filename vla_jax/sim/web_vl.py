"""Synthetic web-style vision-language examples: a caption plus short-answer VQA pairs about
(a) overhead renders of tabletop scenes (sometimes with a robot gripper, maybe holding something)
or (b) plain pictures of colored circles, squares and triangles.

Tabletop pictures use every color/kind combination, including the robot tasks' held-out combos,
so web data can teach what the robot data never shows. Answers are short: a color, a kind, a digit
count ("3"), "yes" / "no", an object name ("red cup") / "nothing", or for "where is the red cup?"
(asked in every example about a uniquely named object) a location token ``<locRC>``
(vla_jax.sim.grounding_answers), which grounds names in image positions.
"""

from __future__ import annotations

import math

import numpy as np

from vla_jax.sim.grounding_answers import location_token, object_location
from vla_jax.sim.render import RGB, CameraSpec, fill_disc, fill_polygon, fill_rect, render
from vla_jax.sim.tasks import make_scene, make_task
from vla_jax.sim.world import COLOR_NAMES, GRASPABLE_KINDS, OBJECT_KINDS, Arm, World

SHAPE_KINDS = ("circle", "square", "triangle")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "gray": (200, 200, 200),
    "beige": (235, 222, 195),
    "light blue": (200, 222, 242),
}
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
_MAX_QA = 4
_LEFT_RIGHT_MARGIN = 0.05  # [m] tabletop objects closer than this in x get no left/right question


def make_web_example(rng: np.random.Generator, image_size: int = 96) -> dict:
    """One example, deterministic given ``rng``.

    Returns {"image": uint8 [R, R, 3], "caption": str, "qa": [(question, answer), ...] (1-4 pairs, then the where question if any),
    "source": "tabletop" | "shapes", "objects": [(color, kind), ...] (what was drawn)}.
    """
    if rng.random() < 0.5:
        return _tabletop_example(rng, image_size)
    return _shapes_example(rng, image_size)


def _a(phrase: str) -> str:
    """'a red cup' / 'an orange cup'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _list_phrase(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _count_phrase(items: list[tuple[str, str]]) -> str:
    """'two red circles, a blue square and a green triangle' from (color, kind) items."""
    groups: dict[tuple[str, str], int] = {}
    for item in items:
        groups[item] = groups.get(item, 0) + 1
    parts = [f"{_NUMBER_WORDS[n]} {c} {k}s" if n > 1 else _a(f"{c} {k}") for (c, k), n in groups.items()]
    return _list_phrase(parts)


def _questions(
    rng: np.random.Generator, items: list[tuple[str, str, float]], kinds: tuple[str, ...], thing: str, margin: float
) -> list[tuple[str, str]]:
    """Candidate QA pairs about (color, kind, x) items; x grows to the right, ``margin`` in x units."""
    pairs = [(c, k) for c, k, _ in items]
    qa = []
    kind = kinds[rng.integers(len(kinds))]
    qa.append((f"how many {kind}s are there?", str(sum(k == kind for _, k in pairs))))
    color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
    qa.append((f"how many {color} {thing}s are there?", str(sum(c == color for c, _ in pairs))))
    qa.append((f"how many {thing}s are there?", str(len(pairs))))
    unique_kinds = [k for k in kinds if sum(k == kk for _, kk in pairs) == 1]
    if unique_kinds:
        kind = unique_kinds[rng.integers(len(unique_kinds))]
        qa.append((f"what color is the {kind}?", next(c for c, k in pairs if k == kind)))
    unique_colors = [c for c in COLOR_NAMES if sum(c == cc for cc, _ in pairs) == 1]
    if unique_colors:
        color = unique_colors[rng.integers(len(unique_colors))]
        question = f"what shape is the {color} one?" if thing == "shape" else f"what is the {color} {thing}?"
        qa.append((question, next(k for c, k in pairs if c == color)))
    asked = (COLOR_NAMES[rng.integers(len(COLOR_NAMES))], kinds[rng.integers(len(kinds))])
    if rng.random() < 0.5:
        asked = pairs[rng.integers(len(pairs))]
    qa.append((f"is there {_a(' '.join(asked))}?", "yes" if asked in pairs else "no"))
    named = [(c, k, x) for c, k, x in items if pairs.count((c, k)) == 1]
    if len(named) >= 2:
        i, j = rng.choice(len(named), size=2, replace=False)
        (c1, k1, x1), (c2, k2, x2) = named[i], named[j]
        if abs(x1 - x2) >= margin:
            side = "left" if rng.random() < 0.5 else "right"
            truth = x1 < x2 if side == "left" else x1 > x2
            qa.append((f"is the {c1} {k1} {side} of the {c2} {k2}?", "yes" if truth else "no"))
    return qa


def _pick_qa(rng: np.random.Generator, qa: list[tuple[str, str]]) -> list[tuple[str, str]]:
    order = rng.permutation(len(qa))[: int(rng.integers(1, _MAX_QA + 1))]
    return [qa[i] for i in sorted(order)]


def _where_qa(rng: np.random.Generator, names: list[tuple[str, str]], locations: list[str]) -> list[tuple[str, str]]:
    """[("where is the red cup?", "<loc25>")] for one uniquely named object, or [] if there is none."""
    unique = [i for i, name in enumerate(names) if names.count(name) == 1]
    if not unique:
        return []
    i = unique[int(rng.integers(len(unique)))]
    return [(f"where is the {' '.join(names[i])}?", locations[i])]


def _tabletop_example(rng: np.random.Generator, size: int) -> dict:
    color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
    kind = GRASPABLE_KINDS[rng.integers(len(GRASPABLE_KINDS))]
    if rng.random() < 0.5:
        task = make_task("place", color, kind, container_color=COLOR_NAMES[rng.integers(len(COLOR_NAMES))])
    else:
        task = make_task("pick", color, kind)
    objects, _, _ = make_scene(task, rng)
    objects = [objects[i] for i in rng.permutation(len(objects))]
    arms, held = [], None
    if rng.random() < 0.5:
        arm = Arm(pos=np.array([*rng.uniform(-0.2, 0.2, size=2), rng.uniform(0.08, 0.2)]), yaw=float(rng.uniform(-0.4, 0.4)))
        arms.append(arm)
    world = World(objects, arms)
    if arms and rng.random() < 0.5:
        held = [o for o in objects if o.graspable][0]
        arms[0].pos = np.array([held.pos[0], held.pos[1], 0.45 * held.height])
        world.step(np.array([[0, 0, 0, 0, 0, 0, 1.0]]), 0.1, 0.0, 1.0)
        world.step(np.array([[0, 0, rng.uniform(0.06, 0.15), 0, 0, 0, 1.0]]), 0.2, 0.0, 1.0)
    elif arms:
        arms[0].aperture = float(rng.random() < 0.5)
    camera = CameraSpec("web", center=tuple(rng.uniform(-0.03, 0.03, size=2)), height=float(rng.uniform(0.75, 0.95)))
    image = render(world, camera, size)

    items = [(o.color, o.kind, float(o.pos[0])) for o in objects]
    scene = _count_phrase([(c, k) for c, k, _ in items])
    templates = ("{} on a table", "a table with {}", "a tabletop with {} on it")
    caption = templates[rng.integers(len(templates))].format(scene)
    qa = _questions(rng, items, OBJECT_KINDS, "object", _LEFT_RIGHT_MARGIN)
    if arms:
        holding = f"{held.color} {held.kind}" if held is not None else "nothing"
        caption += f", with a robot gripper holding the {holding}" if held is not None else ", with a robot gripper above"
        qa.append(("what is the robot holding?", holding))
        qa.append(("is the gripper open?", "yes" if arms[0].aperture < 0.5 else "no"))
    locations = [object_location(world, camera, i) for i in range(len(objects))]
    return {
        "image": image,
        "caption": caption,
        "qa": _pick_qa(rng, qa) + _where_qa(rng, [(c, k) for c, k, _ in items], locations),
        "source": "tabletop",
        "objects": [(c, k) for c, k, _ in items],
    }


def _draw_shape(img: np.ndarray, kind: str, cx: float, cy: float, r: float, angle: float, color) -> None:
    if kind == "circle":
        fill_disc(img, cx, cy, 0.9 * r, color)
    elif kind == "square":
        fill_rect(img, cx, cy, 0.68 * r, 0.68 * r, angle, color)
    else:
        corners = [(cx + r * math.cos(angle + a), cy - r * math.sin(angle + a)) for a in (0.0, 2.094, 4.189)]
        fill_polygon(img, np.array(corners), color)


def _shapes_example(rng: np.random.Generator, size: int) -> dict:
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = BACKGROUNDS[background]
    target = int(rng.integers(1, 7))
    placed: list[tuple[float, float, float]] = []
    items: list[tuple[str, str, float]] = []
    locations: list[str] = []
    for _ in range(200):
        if len(placed) == target:
            break
        r = float(rng.uniform(0.07, 0.12)) * size
        cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
        if all(math.hypot(cx - x, cy - y) >= r + rr + 3 for x, y, rr in placed):
            placed.append((cx, cy, r))
            color = COLOR_NAMES[rng.integers(len(COLOR_NAMES))]
            kind = SHAPE_KINDS[rng.integers(len(SHAPE_KINDS))]
            _draw_shape(img, kind, cx, cy, r, float(rng.uniform(0, 2 * math.pi)), RGB[color])
            items.append((color, kind, float(cx)))
            locations.append(location_token(cx / size, cy / size))
    pairs = [(c, k) for c, k, _ in items]
    caption = f"{_count_phrase(pairs)} on a {background} background"
    qa = _questions(rng, items, SHAPE_KINDS, "shape", 0.08 * size)
    qa = _pick_qa(rng, qa) + _where_qa(rng, pairs, locations)
    return {"image": img, "caption": caption, "qa": qa, "source": "shapes", "objects": pairs}
