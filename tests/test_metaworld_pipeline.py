"""Meta-World end to end at toy scale: scripted demonstrations -> RLDS on disk (schema, prepared copy,
statistics, tokenizer) -> a few training steps of the tiny model -> closed-loop evaluation with baselines."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vla_jax.sim.metaworld import tasks as mw
from vla_jax.train import testing

TASKS = ("drawer-close", "reach")
EPISODES = 2


@pytest.fixture(scope="module")
def mw_dir(tmp_path_factory):
    from vla_jax.data.generate_metaworld import generate_metaworld

    out = str(tmp_path_factory.mktemp("metaworld"))
    generate_metaworld(out, "metaworld_mt10", tasks=TASKS, episodes_per_task=EPISODES, image_size=16, num_workers=0,
                       vocab_size=300, progress=False, log=lambda *_: None)
    return out


def test_generator_writes_successful_rlds_episodes(mw_dir):
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(os.path.join(mw_dir, "metaworld_mt10", "1.0.0"))
    assert builder.info.splits["train"].num_examples == len(TASKS) * EPISODES
    assert builder.info.splits["val"].num_examples == len(TASKS)
    step = builder.info.features["steps"].feature
    assert set(step) == {"observation", "action", "language_instruction", "reward", "discount", "is_first",
                         "is_last", "is_terminal"}
    assert set(step["observation"]) == {"corner2", "gripperPOV", "state"}
    source = builder.as_data_source("train")
    families, seeds = [], set()
    for i in range(len(source)):
        episode = source[i]
        meta, steps = episode["episode_metadata"], list(episode["steps"])
        families.append(meta["task_family"].decode())
        seeds.add(int(meta["seed"]))
        assert meta["success"] and steps[-1]["is_terminal"] and steps[-1]["is_last"] and steps[0]["is_first"]
        assert sum(s["reward"] for s in steps) == 1.0
        assert steps[0]["observation"]["corner2"].shape == (16, 16, 3)
        assert steps[0]["action"].shape == (4,) and steps[0]["observation"]["state"].shape == (4,)
        assert np.all(np.abs(np.stack([s["action"] for s in steps])) <= 1.0)
        text = steps[0]["language_instruction"].decode()
        train_texts = {t for j, t in enumerate(mw.TASKS[families[-1]][1]) if j not in mw.HELDOUT_PARAPHRASES}
        assert text in train_texts
    assert sorted(families) == sorted(TASKS * EPISODES) and len(seeds) == len(source)
    assert os.path.isdir(os.path.join(mw_dir, "prepared", "metaworld_mt10"))
    assert any(f.startswith("metaworld_mt10-") for f in os.listdir(os.path.join(mw_dir, "stats")))

    from vla_jax.data import Tokenizer

    tok = Tokenizer(os.path.join(mw_dir, "tokenizer_metaworld.model"))
    for text in mw.all_instructions()[:20]:
        assert tok.decode(tok.encode(text)) == text


@pytest.mark.slow
def test_train_then_evaluate_closed_loop(mw_dir, tmp_path):
    workdir = str(tmp_path / "run")
    overrides = {**testing.TINY, "data.data_dir": mw_dir, "data.num_workers": 0, "num_steps": 2,
                 "checkpoint.every": 2, "model.max_text_len": 16}
    cmd = [sys.executable, "-m", "vla_jax.train", f"--workdir={workdir}",
           "--config=configs/pretrain.py:debug,mixture=metaworld_mt10"]
    cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
    out = subprocess.run(cmd, cwd=testing.REPO, env=testing.env(), capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    out_dir = str(tmp_path / "eval")
    out = subprocess.run([sys.executable, "tools/evaluate.py", f"--workdir={workdir}", "--suite=metaworld_mt10",
                          f"--tasks={','.join(TASKS)}", "--episodes=1", "--max_steps=4", "--num_envs=2",
                          "--splits=train", "--offline_batches=0", "--baselines", f"--out={out_dir}"],
                         cwd=testing.REPO, env=testing.env(), capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(os.path.join(out_dir, "results.json")) as f:
        results = json.load(f)
    assert set(results["policies"]) == {"model", "expert", "random", "mean"}
    model = results["policies"]["model"]
    assert model["settings"]["suite"] == "metaworld_mt10" and model["settings"]["image_size"] == 16
    assert sorted(e["family"] for e in model["episodes"]) == sorted(TASKS)
    assert all(e["steps"] == 4 for e in model["episodes"])
    assert "SmolVLA-0.45B" in out.stdout and "Easy" in out.stdout
    assert os.path.isfile(os.path.join(out_dir, "filmstrip_model.png"))
