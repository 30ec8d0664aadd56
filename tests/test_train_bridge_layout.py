"""A dataset in the real bridge_dataset (BridgeData V2) key layout trains through config alone."""

import json
import os
import subprocess
import sys

from data_fixtures import bridge_dir, tabletop_dir  # noqa: F401  (fixtures)
from vla_jax.train import testing


def test_train_steps_on_bridge_layout_from_config_only(bridge_dir, tmp_path):  # noqa: F811
    overrides = {**testing.TINY, "model.max_action_dim": 7, "model.max_state_dim": 7, "num_steps": 3,
                 "checkpoint.every": 3, "data.data_dir": bridge_dir, "data.num_workers": 0}
    cmd = [sys.executable, "-m", "vla_jax.train", f"--workdir={tmp_path}",
           "--config=configs/pretrain.py:debug,mixture=bridge"] + [f"--config.{k}={v}" for k, v in overrides.items()]
    out = subprocess.run(cmd, cwd=testing.REPO, env=testing.env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [m["step"] for m in lines] == [1, 2, 3]
    assert all(m["loss/flow/bridge_dataset"] > 0 for m in lines)
    assert os.path.isdir(tmp_path / "checkpoints" / "3")
