"""Tests for vla_jax.sim: physics and success checks, expert, determinism, splits, cameras, web VL data."""

from __future__ import annotations

import re

import numpy as np
import pytest

from vla_jax.sim import (
    EMBODIMENTS,
    FAMILIES,
    HELDOUT_COMBOS,
    HELDOUT_PARAPHRASES,
    Arm,
    SceneObject,
    TabletopEnv,
    World,
    collect_episode,
    make_task,
    make_web_example,
    sample_task,
)
from vla_jax.sim.render import RGB
from vla_jax.sim.tasks import make_scene, task_failure, task_success

MAX_STEP, MAX_ROT, GRIP_SPEED = 0.06, 0.25, 0.5


def _world(*objects: SceneObject, arm_xyz=(0.0, 0.0, 0.15)) -> World:
    return World(list(objects), [Arm(pos=np.array(arm_xyz, dtype=float))])


def _obj(color: str, kind: str, x: float, y: float, size: float = 0.03) -> SceneObject:
    return SceneObject(color, kind, size, np.array([x, y, 0.0]))


def _act(world: World, dxyz=(0.0, 0.0, 0.0), grip: float = 0.0, times: int = 1) -> None:
    for _ in range(times):
        world.step(np.array([[*dxyz, 0.0, 0.0, 0.0, grip]]), MAX_STEP, MAX_ROT, GRIP_SPEED)


def _grasp_and_lift(world: World, x: float, y: float) -> None:
    """Moves the single arm over (x, y), descends, closes and lifts."""
    world.arms[0].pos = np.array([x, y, 0.025])
    _act(world, grip=1.0, times=2)
    _act(world, (0.0, 0.0, 0.05), grip=1.0, times=3)


def test_pick_success_hand_built_and_physical():
    task = make_task("pick", "red", "block")
    world = _world(_obj("red", "block", 0.0, 0.0), _obj("blue", "cup", 0.15, 0.0))
    assert not task_success(world, task, 0, None)
    world.objects[0].pos[2] = 0.1
    world.objects[0].held_by, world.arms[0].held = 0, 0
    assert task_success(world, task, 0, None)

    world = _world(_obj("red", "block", 0.0, 0.0), _obj("blue", "cup", 0.15, 0.0))
    _grasp_and_lift(world, 0.005, 0.0)
    assert world.arms[0].held == 0 and world.objects[0].pos[2] > 0.1
    assert task_success(world, task, 0, None) and task_failure(world, task, 0, None) is None
    _act(world, grip=0.0, times=2)  # let go: it drops to the table where it is
    assert world.objects[0].pos[2] == 0.0 and not task_success(world, task, 0, None)
    assert task_failure(world, task, 0, None) == "dropped"


def test_place_success_inside_bowl_only():
    task = make_task("place", "red", "cup", container_color="green")
    world = _world(_obj("red", "cup", 0.0, 0.0), _obj("green", "bowl", 0.15, 0.0, size=0.065))
    world.objects[0].container = 1
    world.objects[0].pos[2] = 0.01
    assert task_success(world, task, 0, 1)

    world = _world(_obj("red", "cup", 0.0, 0.0), _obj("green", "bowl", 0.15, 0.0, size=0.065))
    _grasp_and_lift(world, 0.0, 0.0)
    _act(world, (0.05, 0.0, 0.0), grip=1.0, times=3)  # over the bowl, still held
    assert not task_success(world, task, 0, 1)
    _act(world, grip=0.0, times=2)
    assert world.objects[0].container == 1 and task_success(world, task, 0, 1)

    world = _world(_obj("red", "cup", 0.0, 0.0), _obj("green", "bowl", 0.15, 0.0, size=0.065))
    _grasp_and_lift(world, 0.0, 0.0)
    _act(world, (-0.05, 0.0, 0.0), grip=1.0, times=2)
    _act(world, grip=0.0, times=2)  # released on the table, not in the bowl
    assert not task_success(world, task, 0, 1) and task_failure(world, task, 0, 1) == "dropped"


def test_release_in_other_bowl_is_wrong_container():
    task = make_task("place", "red", "cup", container_color="green")
    world = _world(
        _obj("red", "cup", 0.0, 0.0), _obj("green", "bowl", 0.15, 0.0, size=0.065), _obj("blue", "bowl", -0.15, 0.0, size=0.065)
    )
    _grasp_and_lift(world, 0.0, 0.0)
    _act(world, (-0.05, 0.0, 0.0), grip=1.0, times=3)
    _act(world, grip=0.0, times=2)
    assert world.objects[0].container == 2
    assert not task_success(world, task, 0, 1) and task_failure(world, task, 0, 1) == "wrong_container"


def test_wrong_object_lifted_is_failure():
    task = make_task("pick", "red", "block")
    world = _world(_obj("red", "block", 0.0, 0.0), _obj("blue", "cup", 0.15, 0.0))
    _grasp_and_lift(world, 0.15, 0.0)
    assert world.arms[0].held == 1
    assert not task_success(world, task, 0, None)
    assert task_failure(world, task, 0, None) == "wrong_object"


@pytest.mark.parametrize("direction,success", [("right", True), ("left", False)])
def test_push_direction(direction, success):
    task = make_task("push", "red", "block", direction=direction)
    world = _world(_obj("red", "block", 0.0, 0.0), arm_xyz=(-0.08, 0.0, 0.015))
    _act(world, (0.04, 0.0, 0.0), grip=1.0, times=5)  # the lowered gripper sweeps to the right
    moved = world.displacement(0)
    assert moved[0] > 0.1 and abs(moved[1]) < 1e-9 and world.objects[0].pos[2] == 0.0
    assert task_success(world, task, 0, None) == success
    assert task_failure(world, task, 0, None) == (None if success else "wrong_direction")


def test_high_gripper_does_not_push():
    world = _world(_obj("red", "block", 0.0, 0.0), arm_xyz=(-0.08, 0.0, 0.15))
    _act(world, (0.04, 0.0, 0.0), times=5)
    assert np.allclose(world.displacement(0), 0.0)


@pytest.mark.parametrize("embodiment", list(EMBODIMENTS))
def test_expert_solves_all_families(embodiment):
    spec = EMBODIMENTS[embodiment]
    results = {family: [] for family in FAMILIES}
    for seed in range(30):
        family = FAMILIES[seed % len(FAMILIES)]
        task = sample_task(np.random.default_rng(seed), family)
        episode = collect_episode(embodiment, task, seed, spec.max_episode_steps, image_size=32)
        results[family].append(episode["episode_metadata"]["success"])
    for family, ok in results.items():
        assert np.mean(ok) >= 0.95, (family, ok)


def test_perturbed_demonstrations_record_the_expert_and_recover():
    """DART: the executed actions are pushed off, the recorded ones are the expert's, and it still succeeds."""
    spec = EMBODIMENTS["single_arm"]
    off_path, successes = 0, []
    for seed in range(12):
        task = sample_task(np.random.default_rng(seed), "pick")
        clean = collect_episode("single_arm", task, seed, spec.max_episode_steps, image_size=16)
        pushed = collect_episode("single_arm", task, seed, spec.max_episode_steps, image_size=16, perturb=0.5)
        assert clean["episode_metadata"]["perturb_std"] == 0.0
        assert 0.0 <= pushed["episode_metadata"]["perturb_std"] <= 0.5 * spec.max_step
        steps = pushed["steps"]
        for step, nxt in zip(steps, steps[1:]):
            moved = nxt["observation"]["state"][:3] - step["observation"]["state"][:3]
            commanded = np.clip(step["action"][:3], -spec.max_step, spec.max_step)
            off_path += bool(np.abs(moved - commanded).max() > 1e-3)  # 0 of ~150 steps without perturb
        successes.append(pushed["episode_metadata"]["success"])
        assert clean["steps"][0]["observation"]["state"].tolist() == steps[0]["observation"]["state"].tolist()
    assert off_path >= 12  # about a quarter of the steps are pushed
    assert np.mean(successes) >= 0.9


def test_episode_format():
    task = sample_task(np.random.default_rng(3), "place")
    episode = collect_episode("bimanual", task, 3, 100, image_size=48)
    steps, meta = episode["steps"], episode["episode_metadata"]
    assert meta == {"task_family": "place", "success": True, "seed": 3, "embodiment": "bimanual", "perturb_std": 0.0}
    assert 15 <= len(steps) < 100
    assert [s["is_first"] for s in steps] == [True] + [False] * (len(steps) - 1)
    assert [s["is_last"] for s in steps] == [False] * (len(steps) - 1) + [True]
    assert steps[-1]["is_terminal"] and not any(s["is_terminal"] for s in steps[:-1])
    rewards = np.array([s["reward"] for s in steps])
    assert rewards.sum() == 1.0 and rewards[-4] == 1.0  # success, then 3 hold steps
    step = steps[0]
    assert set(step["observation"]) == {"image_0", "image_1", "image_2", "state"}
    assert step["observation"]["image_2"].shape == (48, 48, 3) and step["observation"]["state"].shape == (14,)
    assert step["action"].dtype == np.float32 and step["action"].shape == (14,)
    assert step["language_instruction"] == task.instruction and step["discount"] == 1.0


def test_reset_is_deterministic():
    task = sample_task(np.random.default_rng(0), "pick")
    first, second = TabletopEnv("single_arm"), TabletopEnv("single_arm")
    a, b = first.reset(task, 7), second.reset(task, 7)
    for name in a["images"]:
        np.testing.assert_array_equal(a["images"][name], b["images"][name])
    np.testing.assert_array_equal(a["state"], b["state"])
    action = np.array([0.02, 0.01, -0.03, 0.0, 0.0, 0.1, 1.0])
    np.testing.assert_array_equal(first.step(action)["images"]["image_1"], second.step(action)["images"]["image_1"])
    c = first.reset(task, 8)
    assert not np.array_equal(a["images"]["image_0"], c["images"]["image_0"])


@pytest.mark.parametrize("embodiment", list(EMBODIMENTS))
def test_observation_shapes_and_cameras(embodiment):
    spec = EMBODIMENTS[embodiment]
    env = TabletopEnv(embodiment, image_size=64)
    obs = env.reset(sample_task(np.random.default_rng(1), "push"), 1)
    assert tuple(obs["images"]) == spec.camera_names
    for image in obs["images"].values():
        assert image.dtype == np.uint8 and image.shape == (64, 64, 3)
    assert obs["state"].dtype == np.float32 and obs["state"].shape == (spec.state_dim,)
    assert not np.array_equal(obs["images"]["image_0"], obs["images"]["image_1"])
    assert len(spec.gripper_dims) == spec.action_dim and sum(spec.gripper_dims) == spec.num_arms
    with pytest.raises(ValueError):
        env.step(np.zeros(spec.action_dim + 1))
    assert env.step(np.zeros(spec.action_dim))["state"].shape == (spec.state_dim,)


def test_overhead_views_differ_between_embodiments():
    task = sample_task(np.random.default_rng(2), "pick")
    single = TabletopEnv("single_arm").reset(task, 2)["images"]["image_0"]
    bimanual = TabletopEnv("bimanual").reset(task, 2)["images"]["image_0"]
    assert not np.array_equal(single, bimanual)


def test_heldout_splits():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        task = sample_task(rng, split="train")
        assert (task.object_color, task.object_kind) not in HELDOUT_COMBOS
        assert (task.container_color, "bowl") not in HELDOUT_COMBOS
        assert task.paraphrase not in HELDOUT_PARAPHRASES[task.family]
    for _ in range(200):
        task = sample_task(rng, split="train")
        objects, _, _ = make_scene(task, rng)
        assert not any((o.color, o.kind) in HELDOUT_COMBOS for o in objects)
    for _ in range(300):
        task = sample_task(rng, split="heldout_combo")
        combos = {(task.object_color, task.object_kind), (task.container_color, "bowl")}
        assert combos & HELDOUT_COMBOS and task.paraphrase not in HELDOUT_PARAPHRASES[task.family]
        task = sample_task(rng, split="heldout_paraphrase")
        assert task.paraphrase in HELDOUT_PARAPHRASES[task.family]
        assert (task.object_color, task.object_kind) not in HELDOUT_COMBOS


def test_scene_contains_task_objects():
    rng = np.random.default_rng(4)
    for _ in range(100):
        task = sample_task(rng)
        objects, target, container = make_scene(task, rng)
        assert 2 <= len(objects) <= 4
        assert (objects[target].color, objects[target].kind) == (task.object_color, task.object_kind)
        if task.family == "place":
            assert (objects[container].color, objects[container].kind) == (task.container_color, "bowl")
        assert len({(o.color, o.kind) for o in objects}) == len(objects)  # instructions are unambiguous


def test_web_examples_are_deterministic():
    a = [make_web_example(np.random.default_rng(11)) for _ in range(2)]
    assert a[0]["caption"] == a[1]["caption"] and a[0]["qa"] == a[1]["qa"]
    np.testing.assert_array_equal(a[0]["image"], a[1]["image"])


def _components(mask: np.ndarray) -> int:
    """Number of 8-connected components in a bool mask."""
    seen = np.zeros_like(mask)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        stack = [start]
        seen[start] = True
        while stack:
            r, c = stack.pop()
            for rr in range(max(r - 1, 0), min(r + 2, mask.shape[0])):
                for cc in range(max(c - 1, 0), min(c + 2, mask.shape[1])):
                    if mask[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        stack.append((rr, cc))
    return count


def test_web_answers_are_consistent():
    rng = np.random.default_rng(5)
    sources = set()
    for _ in range(60):
        ex = make_web_example(rng)
        image, objects = ex["image"], ex["objects"]
        sources.add(ex["source"])
        assert image.dtype == np.uint8 and image.shape == (96, 96, 3) and 1 <= len(ex["qa"]) <= 5
        for question, answer in ex["qa"]:
            if m := re.fullmatch(r"how many (\w+)s are there\?", question):
                word = m.group(1)
                expected = len(objects) if word in ("shape", "object") else sum(k == word for _, k in objects)
                assert answer == str(expected)
            if m := re.fullmatch(r"how many (\w+) (?:shape|object)s are there\?", question):
                assert answer == str(sum(c == m.group(1) for c, _ in objects))
            if m := re.fullmatch(r"what color is the (\w+)\?", question):
                assert (answer, m.group(1)) in objects
        if ex["source"] == "shapes":  # every drawn shape is one blob of its exact color
            background = image[0, 0]
            assert _components(np.any(image != background, axis=-1)) == len(objects)
            for color in {c for c, _ in objects}:
                mask = np.all(image == np.array(RGB[color], dtype=np.uint8), axis=-1)
                assert _components(mask) == sum(c == color for c, _ in objects)
    assert sources == {"tabletop", "shapes"}


def _cell_colors(image: np.ndarray, token: str) -> np.ndarray:
    """The pixels [N, 3] of the grid cell named by a location token."""
    from vla_jax.sim.grounding_answers import GRID

    row, col = int(token[4]), int(token[5])
    step = image.shape[0] // GRID
    return image[row * step : (row + 1) * step, col * step : (col + 1) * step].reshape(-1, 3)


def test_location_tokens_name_the_cell_where_the_target_is_drawn():
    from vla_jax.sim.grounding_answers import GRID, LOCATION_TOKENS, location_token

    assert len(LOCATION_TOKENS) == GRID * GRID == len(set(LOCATION_TOKENS))
    assert location_token(0.0, 0.0) == "<loc00>" and location_token(0.99, 0.5) == f"<loc{GRID // 2}{GRID - 1}>"
    assert location_token(-0.2, 1.3) == f"<loc{GRID - 1}0>"  # outside: nearest border cell
    checked = 0
    for seed in range(8):
        task = sample_task(np.random.default_rng(seed), "pick")
        steps = collect_episode("single_arm", task, seed, 60, image_size=96)["steps"]
        first = steps[0]
        if first["target_location"] == "":  # the target starts within reach of the gripper
            continue
        checked += 1
        assert first["target_location"] in LOCATION_TOKENS
        base = np.array(RGB[task.object_color], np.int32)  # the target's own color is inside its cell
        pixels = _cell_colors(first["observation"]["image_0"], first["target_location"]).astype(np.int32)
        assert np.abs(pixels - base).sum(axis=-1).min() < 30, (seed, task.instruction, first["target_location"])
        assert steps[-1]["target_location"] == ""  # held at the end of a pick: no answer (the gripper shortcut)
        answered = [s["target_location"] != "" for s in steps]
        assert answered[: answered.index(False)] == [True] * answered.index(False)  # until reached, then never
        assert not any(answered[answered.index(False):])
    assert checked >= 5


def test_web_where_questions_answer_with_the_drawn_cell():
    from vla_jax.sim.grounding_answers import LOCATION_TOKENS

    rng = np.random.default_rng(11)
    asked = 0
    for _ in range(40):
        ex = make_web_example(rng)
        for question, answer in ex["qa"]:
            if m := re.fullmatch(r"where is the (\w+) (\w+)\?", question):
                asked += 1
                assert answer in LOCATION_TOKENS and ex["objects"].count((m.group(1), m.group(2))) == 1
                pixels = _cell_colors(ex["image"], answer).astype(np.int32)
                assert np.abs(pixels - np.array(RGB[m.group(1)], np.int32)).sum(axis=-1).min() < 30, question
    assert asked >= 30  # asked in (almost) every example
