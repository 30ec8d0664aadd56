"""Meta-World: the task table, the environment (determinism, success detection, rendering), the scripted
expert through the closed-loop harness, and the one-line error without an OpenGL backend."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from vla_jax.eval import ExpertPolicy, RandomPolicy, evaluate
from vla_jax.eval.groups import by_group, group_table
from vla_jax.sim.metaworld import tasks as mw
from vla_jax.train import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_task_table_covers_mt50_with_the_published_groups():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS, MT10_V3

    assert set(mw.MT50) == {name[: -len("-v3")] for name in ALL_V3_ENVIRONMENTS}
    assert {name[: -len("-v3")] for name in MT10_V3} == set(mw.MT10)
    counts = {g: sum(mw.group_of(t) == g for t in mw.MT50) for g in mw.GROUPS}
    assert counts == {"easy": 28, "medium": 11, "hard": 6, "very_hard": 5}
    assert [mw.group_of(t) for t in ("door-open", "basketball", "assembly", "stick-pull")] == [
        "easy", "medium", "hard", "very_hard"]
    texts = mw.all_instructions()
    assert len(texts) == len(set(texts)) == 5 * 50
    assert mw.make_task("door-open").instruction == "open the door"


def test_heldout_paraphrases_stay_out_of_the_train_split():
    rng = np.random.default_rng(0)
    for name in mw.MT50:
        held = {mw.TASKS[name][1][i] for i in mw.HELDOUT_PARAPHRASES}
        train = {mw.sample_task(rng, name, "train").instruction for _ in range(12)}
        assert train and not train & held
        assert mw.sample_task(rng, name, "heldout_paraphrase").instruction in held


_ROLLOUTS = """
import numpy as np, sys
from vla_jax.sim.metaworld import tasks as mw
from vla_jax.sim.metaworld.env import MetaWorldEnv

def rollout(seed, steps=6):
    env = MetaWorldEnv(image_size=24)
    try:
        frames = [env.reset(mw.make_task("drawer-close"), seed)]
        expert = env.expert(noise=0.1, seed=seed)
        frames += [env.step(expert.act()) for _ in range(steps)]
    finally:
        env.close()
    return frames

out = {}
for run, seed in (("a", 3), ("b", 3), ("c", 4)):
    for i, frame in enumerate(rollout(seed)):
        out[f"{run}/{i}/state"] = frame["state"]
        for cam, image in frame["images"].items():
            out[f"{run}/{i}/{cam}"] = image
np.savez(sys.argv[1], **out)
"""


def test_env_is_deterministic_for_a_seed_and_observes_two_cameras(tmp_path):
    # Rendering runs in a fresh interpreter: MuJoCo's EGL context crashed inside the long-lived test process.
    path = tmp_path / "rollouts.npz"
    proc = subprocess.run([sys.executable, "-c", _ROLLOUTS, str(path)], cwd=testing.REPO, env=testing.env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    f = np.load(path)
    frames = {run: [{k.split("/")[2]: f[k] for k in f.files if k.startswith(f"{run}/{i}/")} for i in range(7)]
              for run in "abc"}
    a, b, c = frames["a"], frames["b"], frames["c"]
    assert set(a[0]) == {"state", "corner2", "gripperPOV"}
    for cam in ("corner2", "gripperPOV"):
        image = a[0][cam]
        assert image.shape == (24, 24, 3) and image.dtype == np.uint8 and image.std() > 1.0
    assert a[0]["state"].shape == (4,) and a[0]["state"].dtype == np.float32
    for x, y in zip(a, b):
        for key in x:
            assert np.array_equal(x[key], y[key])
    assert not np.array_equal(a[-1]["state"], c[-1]["state"])
    assert not np.array_equal(a[0]["state"], a[-1]["state"])  # the expert moved the arm


def test_success_detection():
    from vla_jax.sim.metaworld.env import MetaWorldEnv

    env = MetaWorldEnv(image_size=0)
    try:
        assert env.reset(mw.make_task("door-open"), 1)["images"] == {}
        assert not env.success()
        for _ in range(5):  # the door opens only after the gripper reached the handle
            env.step(np.zeros(4))
        assert not env.success()
        expert = env.expert(noise=0.0, seed=1)
        for _ in range(200):
            env.step(expert.act())
            if env.success():
                break
        assert env.success() and env.num_steps < 200
        env.reset(mw.make_task("door-open"), 2)
        assert not env.success() and env.num_steps == 0
    finally:
        env.close()


def test_expert_through_the_harness_beats_random():
    kwargs = dict(suite="metaworld_mt50", families=("drawer-close", "button-press-topdown", "reach"),
                  episodes_per_cell=4, split="train", num_envs=2, record=0)
    expert = evaluate(ExpertPolicy(), **kwargs)
    random = evaluate(RandomPolicy(seed=0), max_steps=30, **kwargs)
    assert expert.overall().n == 12 and expert.overall().rate >= 0.95
    assert random.overall().rate <= 0.25
    groups = by_group(expert, {t: mw.group_of(t) for t in mw.MT50})
    assert set(groups) == {"easy"} and groups["easy"].n == 12
    table = group_table({"expert": expert}, {t: mw.group_of(t) for t in mw.MT50})
    assert "SmolVLA-0.45B" in table and "expert (this code, CPU run)" in table


def test_missing_opengl_backend_is_one_line():
    env = {**os.environ, "MUJOCO_GL": "no_such_backend", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "tools/evaluate.py", "--policy=expert", "--suite=metaworld_mt10",
                          "--tasks=reach", "--episodes=1", "--max_steps=2", "--splits=train", "--out=/tmp/unused"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "MUJOCO_GL" in lines[0] and "libegl1" in lines[0] and "libosmesa6" in lines[0]


@pytest.mark.parametrize("argv,message", [(["--suite=metaworld_mt50", "--tasks=fly"], "'fly'"),
                                          (["--suite=nope"], "--suite=nope")])
def test_bad_suite_flags_are_one_line(argv, message):
    out = subprocess.run([sys.executable, "tools/evaluate.py", "--policy=expert", "--out=/tmp/unused", *argv],
                         cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
