"""Shared pieces of the serving tests (imported by tests/test_serve*.py; no tests here).

One tiny flow model (testing.TINY with room for the tabletop single arm and DROID: 8 action, 9 state dims)
gets random parameters (test_export_helpers.init_params) and is saved in the trainer's layout next to the
tiny generated tabletop data (tests/data_fixtures.py), with the statistics training would have saved for the
tabletop datasets plus a ``droid`` entry (openpi-style z-score, 8-D state and actions); it is exported once
to a PyTorch + ONNX folder. Built once per session (module-level cache).
"""

from __future__ import annotations

import functools
import os
import socket

import numpy as np
from test_export_helpers import init_params, save_checkpoint, tmp_root

from vla_jax.train import testing

STEP = 3
MODEL = {**testing.TINY, "model.max_action_dim": 8, "model.max_state_dim": 9, "model.max_text_len": 24,
         "model.action_horizon": 4}


def config(data_dir: str):
    from vla_jax.config import load_config

    c = load_config(f"{testing.REPO}/configs/pretrain.py:debug", MODEL)
    c.data.data_dir = data_dir
    c.data.num_workers = 0
    return c


def droid_stats() -> dict:
    rng = np.random.default_rng(3)

    def block(dim):
        mean, std = rng.normal(size=dim), rng.uniform(0.2, 2.0, dim)
        return {"mean": mean.tolist(), "std": std.tolist(), "q01": (mean - 2 * std).tolist(),
                "q99": (mean + 2 * std).tolist()}

    return {"action": block(8), "state": block(8), "action_normalization": "normal", "state_normalization": "normal"}


@functools.lru_cache(maxsize=None)
def serve_run(data_dir: str) -> str:
    """A workdir with one checkpoint (step STEP) of the tiny model trained on ``data_dir``'s tabletop data."""
    from vla_jax.data import mixture
    from vla_jax.data.settings import read_settings

    c = config(data_dir)
    settings = read_settings(c)
    stats = {name: mixture.dataset_stats(settings, name)[1] for name in settings.mixture
             if settings.datasets[name].kind == "robot"}
    stats["droid"] = droid_stats()
    workdir = os.path.join(tmp_root(), "serve_run")
    params = init_params(c, seed=0, scale=0.3)
    save_checkpoint(workdir, STEP, params, params, c, stats)
    return workdir


@functools.lru_cache(maxsize=None)
def serve_export(data_dir: str) -> str:
    """``serve_run`` exported to PyTorch + ONNX (parity-checked by the exporter)."""
    from vla_jax.export.package import export

    out = os.path.join(tmp_root(), "serve_export")
    export(serve_run(data_dir), out, fmt="all", log=lambda *a: None)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tabletop_obs(seed: int = 0, size: int = 96) -> dict:
    """A simulator observation of the single arm (vla_jax.sim layout) and its instruction."""
    from vla_jax.sim import TabletopEnv, sample_task

    env = TabletopEnv("single_arm", size)
    task = sample_task(np.random.default_rng(seed), "pick", "train")
    return {**env.reset(task, seed), "instruction": task.instruction}


def tabletop_request(sim_obs: dict, **extra) -> dict:
    """The single_arm robot's request for a simulator observation."""
    return {"observation/image_0": sim_obs["images"]["image_0"], "observation/image_1": sim_obs["images"]["image_1"],
            "observation/state": sim_obs["state"], "prompt": sim_obs["instruction"], **extra}


def droid_request(seed: int = 0, **extra) -> dict:
    """An openpi DROID client's request: 180 x 320 exterior and wrist images, 7 joints + gripper."""
    rng = np.random.default_rng(seed)
    return {"observation/exterior_image_1_left": rng.integers(0, 256, (180, 320, 3), dtype=np.uint8),
            "observation/wrist_image_left": rng.integers(0, 256, (180, 320, 3), dtype=np.uint8),
            "observation/joint_position": rng.normal(size=7), "observation/gripper_position": np.array([0.3]),
            "prompt": "pick up the red block", **extra}
