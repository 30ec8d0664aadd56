"""The README passes a relative --workdir: training saves and resumes there, and export reads it. Off a terminal
(a log file, SLURM) the progress is plain lines, without tqdm's carriage-return fragments."""

import os
import subprocess
import sys

from vla_jax.train import testing


def test_relative_workdir_saves_resumes_and_exports(tmp_path):
    config = os.path.join(testing.REPO, "configs", "pretrain.py") + ":debug,mixture=synthetic"
    flags = [f"--config.{k}={v}" for k, v in {**testing.TINY, "num_steps": 4, "checkpoint.every": 2}.items()]
    cmd = [sys.executable, "-m", "vla_jax.train", "--workdir=runs/rel", f"--config={config}", *flags]
    first = subprocess.run(cmd, cwd=tmp_path, env=testing.env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert sorted(os.listdir(tmp_path / "runs" / "rel" / "checkpoints")) == ["2", "4"]
    again = subprocess.run(cmd[:-len(flags)] + flags[:-2] + ["--config.num_steps=6", "--config.checkpoint.every=2"],
                           cwd=tmp_path, env=testing.env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from step 4" in again.stdout
    assert "\r" not in again.stderr and "train: 6/6 steps (100%)" in again.stderr, again.stderr[-2000:]

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        from vla_jax.train.checkpoint import load_params
        loaded = load_params("runs/rel")
    finally:
        os.chdir(cwd)
    assert loaded.step == 6 and set(loaded.params) == {"params"}
    assert loaded.config["model"]["llm"]["width"] == testing.TINY["model.llm.width"]
