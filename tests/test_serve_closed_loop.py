"""Closed-loop evaluation through the websocket: ``tools/evaluate.py --server=ws://...`` against a JAX-backend server
on the checkpoint reproduces the in-process evaluation of the same checkpoint with the same seeds, episode by
episode; and the remote policy's chunks equal the in-process policy's."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from data_fixtures import tabletop_dir  # noqa: F401  (fixture)
from serve_helpers import config, serve_run
from test_eval_tools import load_tool

from vla_jax.serve.backends import load_backend
from vla_jax.serve.robots import get_robot
from vla_jax.serve.server import PolicyServer, ServerThread

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")]
FLAGS = ["--episodes=2", "--tasks=pick,push", "--embodiments=single_arm", "--splits=train", "--max_steps=10",
         "--execute_steps=2", "--image_size=32", "--num_envs=4", "--record=0", "--seed=5"]


def episodes(out: str) -> list[dict]:
    with open(os.path.join(out, "results.json")) as f:
        payload = json.load(f)
    return payload["policies"]["model"]["episodes"] if "policies" in payload else payload["episodes"]


def test_evaluate_through_the_server_equals_in_process(tabletop_dir, tmp_path):  # noqa: F811
    from vla_jax.eval.agents import make_model_policy
    from vla_jax.eval.remote import RemotePolicy
    from vla_jax.models.vla import VLA, make_config
    from vla_jax.sim import TabletopEnv, sample_task
    from vla_jax.train.checkpoint import load_params

    workdir = serve_run(tabletop_dir)
    tool = load_tool("evaluate")
    assert tool.main([f"--workdir={workdir}", f"--out={tmp_path / 'local'}", "--offline_batches=0",
                      "--grounding_scenes=0", *FLAGS]) == 0
    server = PolicyServer(load_backend("jax", workdir=workdir), get_robot("single_arm"), port=0, max_batch=4,
                          max_wait_ms=1000)
    with ServerThread(server) as thread:
        assert tool.main([f"--server={thread.url}", f"--out={tmp_path / 'served'}", *FLAGS]) == 0
        assert dict(server.batcher.batch_sizes) == {4: server.requests // 4}  # every call one batch of 4 envs
        remote = RemotePolicy(thread.url, seed=5)
        ck = load_params(workdir)
        local = make_model_policy(config(tabletop_dir), VLA(make_config(config(tabletop_dir).model)), ck.params, seed=5)
        envs = [TabletopEnv("single_arm", 32) for _ in range(3)]
        obs = [env.reset(sample_task(np.random.default_rng(i), "pick", "train"), i) for i, env in enumerate(envs)]
        texts = [env.task.instruction for env in envs]
        for policy in (remote, local):
            policy.reset(4)
        chunks = [(remote.act(obs, texts, "single_arm"), local.act(obs, texts, "single_arm")) for _ in range(2)]
        remote.close()
    for a, b in chunks:
        assert a.shape == (3, 4, 7)
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(chunks[0][0], chunks[1][0])  # a new noise per call
    served, local_episodes = episodes(str(tmp_path / "served")), episodes(str(tmp_path / "local"))
    assert len(served) == 4 and served == local_episodes
