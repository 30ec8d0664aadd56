"""The three backends behind the server (JAX on the checkpoint, PyTorch and ONNX on its export) answer the same
requests alike, and batched answers equal unbatched ones for the same noise (real openpi clients, loopback)."""

from __future__ import annotations

import concurrent.futures
import contextlib

import numpy as np
import pytest
from data_fixtures import tabletop_dir  # noqa: F401  (fixture)
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from serve_helpers import droid_request, serve_export, serve_run, tabletop_obs, tabletop_request

from vla_jax.serve.backends import load_backend
from vla_jax.serve.robots import get_robot
from vla_jax.serve.server import PolicyServer, ServerThread

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")


@pytest.fixture(scope="module")
def backends(tabletop_dir):  # noqa: F811
    folder = serve_export(tabletop_dir)
    return {"jax": load_backend("jax", workdir=serve_run(tabletop_dir)),
            "torch": load_backend("torch", policy=folder, threads=1), "onnx": load_backend("onnx", policy=folder)}


@contextlib.contextmanager
def running(backend, robot: str = "single_arm", **kwargs):
    server = PolicyServer(backend, get_robot(robot), port=0, **kwargs)
    with ServerThread(server) as thread:
        yield server, thread.url


def ask(url: str, requests: list[dict]) -> np.ndarray:
    client = WebsocketClientPolicy(url)
    out = np.stack([client.infer(r)["actions"] for r in requests])
    client._ws.close()
    return out


def test_jax_torch_onnx_answer_the_same_observations(backends):
    tabletop = [tabletop_request(tabletop_obs(i), noise_seed=i) for i in range(2)]
    droid = [droid_request(i, noise_seed=i) for i in range(2)]
    answers = {}
    for name, backend in backends.items():
        with running(backend) as (_, url):
            answers[name, "single_arm"] = ask(url, tabletop)
        with running(backend, "droid") as (server, url):
            answers[name, "droid"] = ask(url, droid)
            assert server.metadata["backend"] == name
    for robot, shape in (("single_arm", (2, 4, 7)), ("droid", (2, 4, 8))):
        assert answers["jax", robot].shape == shape
        for name in ("torch", "onnx"):
            np.testing.assert_allclose(answers[name, robot], answers["jax", robot], atol=1e-4, err_msg=name)


@pytest.mark.parametrize("name", ["jax", "torch"])
def test_batched_answers_equal_unbatched_ones(backends, name):
    requests = [tabletop_request(tabletop_obs(i), noise_seed=10 + i) for i in range(5)]
    with running(backends[name], max_batch=8, max_wait_ms=5000) as (server, url):
        clients = [WebsocketClientPolicy(url) for _ in requests]
        with concurrent.futures.ThreadPoolExecutor(len(clients)) as pool:
            replies = list(pool.map(lambda c, r: c.infer(r), clients, requests))
        for c in clients:
            c._ws.close()
    assert dict(server.batcher.batch_sizes) == {5: 1}  # one model call (JAX: padded to 8)
    assert {r["server_timing"]["padded_batch_size"] for r in replies} == {8 if name == "jax" else 5}
    with running(backends[name], max_batch=1) as (server, url):
        unbatched = ask(url, requests)
    assert dict(server.batcher.batch_sizes) == {1: 5}
    np.testing.assert_allclose(np.stack([r["actions"] for r in replies]), unbatched, atol=1e-5)
