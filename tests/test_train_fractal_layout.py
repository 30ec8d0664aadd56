"""A TFRecord dataset in the real fractal20220817_data (RT-1) layout, as Open X-Embodiment releases it, trains
through a config file alone after the one prepare command."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from data_fixtures import FRACTAL, tabletop_dir, write_fractal_dataset  # noqa: F401  (fixture)
from vla_jax.train import testing


@pytest.mark.slow
def test_fractal_tfrecord_release_trains_after_prepare(tabletop_dir, tmp_path):  # noqa: F811
    root = tmp_path / "oxe"
    write_fractal_dataset(str(root))
    shutil.copy(os.path.join(tabletop_dir, "tokenizer.model"), root / "tokenizer.model")
    overrides = {**testing.TINY, "model.max_action_dim": 7, "model.max_state_dim": 8, "num_steps": 2,
                 "checkpoint.every": 2, "data.data_dir": str(root), "data.num_workers": 0}
    config = ["--config=configs/pretrain.py:debug,mixture=fractal"] + [f"--config.{k}={v}" for k, v in overrides.items()]

    def run(*args):
        return subprocess.run([sys.executable, *args, *config], cwd=testing.REPO, env=testing.env(), capture_output=True,
                              text=True, timeout=300)

    out = run("tools/prepare_data.py", "--workers=1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "transitions/s" in out.stdout and f"[stats] {FRACTAL}: wrote" in out.stdout

    out = run("-m", "vla_jax.train", f"--workdir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [m["step"] for m in lines] == [1, 2] and all(m[f"loss/flow/{FRACTAL}"] > 0 for m in lines)
