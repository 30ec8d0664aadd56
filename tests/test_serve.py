"""The policy server with the real openpi-client over loopback (PyTorch backend on an exported tiny model):
handshake metadata, tabletop and DROID requests against the training pipeline, ActionChunkBroker, health check,
API keys, and every bad-client case, each followed by a well-behaved client that is still served."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
from data_fixtures import tabletop_dir  # noqa: F401  (fixture)
from openpi_client.action_chunk_broker import ActionChunkBroker
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from serve_helpers import STEP, config, droid_request, serve_export, tabletop_obs, tabletop_request
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from vla_jax.serve.backends import TorchBackend
from vla_jax.serve.protocol import pack, unpack
from vla_jax.serve.robots import get_robot
from vla_jax.serve.server import PolicyServer, ServerThread
from vla_jax.train import testing

# openpi-client 0.1.2 opens its connection without a context manager, which websockets 17 flags
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")


@pytest.fixture(scope="module")
def folder(tabletop_dir):  # noqa: F811
    return serve_export(tabletop_dir)


@pytest.fixture(scope="module")
def backend(folder):
    return TorchBackend(folder, threads=1)


@contextlib.contextmanager
def running(backend, robot: str = "single_arm", **kwargs):
    server = PolicyServer(backend, get_robot(robot), port=0, **kwargs)
    with ServerThread(server) as thread:
        yield server, thread.url


def served(url: str, **kwargs) -> np.ndarray:
    """A well-behaved client's chunk for a tabletop observation."""
    client = WebsocketClientPolicy(url, **kwargs)
    actions = client.infer(tabletop_request(tabletop_obs(1), noise_seed=1))["actions"]
    client._ws.close()
    return actions


def test_handshake_metadata_and_tabletop_actions_equal_the_training_pipeline(backend, folder,
                                                                             tabletop_dir):  # noqa: F811
    from vla_jax.data.policy_io import make_policy_io
    from vla_jax.export.torch_port import VLAPolicy

    with running(backend) as (server, url):
        client = WebsocketClientPolicy(url)
        meta = client.get_server_metadata()
        assert {k: meta[k] for k in ("robot", "action_horizon", "action_dim", "model_preset", "checkpoint_step",
                                     "backend", "dataset")} == {
            "robot": "single_arm", "action_horizon": 4, "action_dim": 7, "model_preset": "debug",
            "checkpoint_step": STEP, "backend": "torch", "dataset": "tabletop_single_arm"}
        assert meta["observation"]["observation/image_0"] == {"dtype": "uint8", "shape": [None, None, 3],
                                                              "required": True}
        assert meta["observation"]["observation/state"]["shape"] == [8]
        obs = tabletop_obs(0)
        noise = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
        reply = client.infer(tabletop_request(obs, noise=noise))
        assert reply["actions"].shape == (4, 7) and reply["actions"].dtype == np.float32
        assert reply["server_timing"]["infer_ms"] > 0 and reply["server_timing"]["batch_size"] == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz") as r:
            assert r.status == 200
        client._ws.close()
    io = make_policy_io(config(tabletop_dir), "tabletop_single_arm")  # closed-loop evaluation's preprocessing
    policy = VLAPolicy.from_pretrained(folder)
    batch = io.observation(obs, obs["instruction"])
    want = io.actions(policy.sample_actions(**batch, noise=noise[None]).numpy())[0]
    np.testing.assert_allclose(reply["actions"], want, atol=1e-5)  # robot units, as in closed-loop evaluation


def test_droid_request_gives_droid_units(backend, folder):
    from vla_jax.export.torch_port import VLAPolicy

    request = droid_request(noise_seed=4)
    with running(backend, "droid") as (server, url):
        client = WebsocketClientPolicy(url)
        meta = client.get_server_metadata()
        assert meta["action_dim"] == 8 and meta["observation"]["observation/joint_position"]["shape"] == [7]
        actions = client.infer(request)["actions"]
        client._ws.close()
        example = server.io.example(server.spec.parse(request))
    assert actions.shape == (4, 8)
    policy = VLAPolicy.from_pretrained(folder)  # the torch port's own normalization code as the reference
    raw_state = np.concatenate([request["observation/joint_position"], request["observation/gripper_position"]])
    np.testing.assert_allclose(example["state"], policy.normalize_state(raw_state, "droid")[0], atol=1e-6)
    noise = np.random.default_rng(4).standard_normal((4, 8), dtype=np.float32)
    want = policy.sample_actions(**{k: v[None] for k, v in example.items()}, noise=noise[None], dataset="droid")
    np.testing.assert_allclose(actions, want.numpy()[0], atol=1e-5)
    assert np.abs(actions).max() > 1.5  # z-score statistics with std up to 2: robot units, not [-1, 1]


def test_action_chunk_broker_asks_once_per_chunk(backend):
    request = tabletop_request(tabletop_obs(2), noise_seed=9)
    with running(backend) as (server, url):
        client = WebsocketClientPolicy(url)
        chunk = client.infer(request)["actions"]
        broker = ActionChunkBroker(client, action_horizon=4)
        before = server.requests
        steps = [broker.infer(request)["actions"] for _ in range(8)]
        assert server.requests - before == 2
        client._ws.close()
    np.testing.assert_allclose(np.stack(steps[:4]), chunk, atol=1e-6)
    np.testing.assert_allclose(np.stack(steps[4:]), chunk, atol=1e-6)


def test_docs_snippet_runs(backend):
    text = open(os.path.join(testing.REPO, "docs", "serving.md")).read()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    with running(backend) as (server, url):
        scope: dict = {}
        exec(snippet.replace("8000", str(server.port)), scope)
        assert scope["chunk"].shape == (4, 7) and scope["action"].shape == (7,) and server.requests == 2
        scope["client"]._ws.close()


def test_api_key_is_required_when_set(backend, caplog):
    caplog.set_level(logging.INFO, "vla_jax.serve")
    with running(backend, api_key="s3cret") as (server, url):
        for key in (None, "wrong"):
            with pytest.raises(InvalidStatus, match="401"):
                WebsocketClientPolicy(url, api_key=key)
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz") as r:
            assert r.status == 200  # health checks need no key
        assert served(url, api_key="s3cret").shape == (4, 7)
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 2 and "no API key" in refused[0] and "wrong API key" in refused[1]


# ------------------------------------------------------------------------------------------ bad clients
def openpi_infer(url: str, request: dict) -> str:
    client = WebsocketClientPolicy(url)
    with pytest.raises(RuntimeError) as e:
        client.infer(request)
    with pytest.raises(ConnectionClosed) as closed:
        client._ws.recv(timeout=5)
    assert closed.value.rcvd.code == 1011
    return str(e.value).removeprefix("Error in inference server:\n")


def raw(url: str, frame, expect_code: int) -> str | None:
    """Sends one frame on a plain websocket; returns the error text frame (if any) and checks the close code."""
    with connect(url, max_size=None) as ws:
        unpack(ws.recv(timeout=5))  # metadata
        ws.send(frame)
        text = None
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                text = ws.recv(timeout=5)
        assert closed.value.rcvd.code == expect_code
    return text


def disconnect_mid_request(url: str) -> str:
    with connect(url) as ws:
        ws.recv(timeout=5)
        ws.send(pack(tabletop_request(tabletop_obs(3))))
    time.sleep(0.5)  # the server answers into a closed connection
    return ""


def idle(url: str) -> str:
    with connect(url) as ws:
        ws.recv(timeout=5)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1008
    return ""


def no_handshake(url: str) -> str:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(10)
        assert s.recv(1) == b""  # dropped after open_timeout
    return ""


GOOD = tabletop_request(tabletop_obs(1))
BAD_CASES = {  # name: (what the bad client does, text it gets back, server log line)
    "malformed msgpack": (lambda url: raw(url, b"\xc1\x00\x01", 1011), "not a msgpack message", "bad request"),
    "text frame": (lambda url: raw(url, "hello", 1011), "expected a binary msgpack frame", "bad request"),
    "not a dict": (lambda url: raw(url, pack([1, 2]), 1011), "not an observation dict", "bad request"),
    "unknown key": (lambda url: openpi_infer(url, {**GOOD, "extra": 1}), "unknown key 'extra'", "bad request"),
    "missing key": (lambda url: openpi_infer(url, {k: v for k, v in GOOD.items() if k != "observation/state"}),
                    "missing key 'observation/state'", "bad request"),
    "wrong dtype": (lambda url: openpi_infer(url, {**GOOD, "observation/image_0": GOOD["observation/image_0"] / 255}),
                    "has dtype float64", "bad request"),
    "wrong shape": (lambda url: openpi_infer(url, {**GOOD, "observation/state": np.zeros(5)}),
                    "has shape [5]; expected [8]", "bad request"),
    "wrong channels": (lambda url: openpi_infer(url, {**GOOD, "observation/image_1": np.zeros((96, 96, 4), np.uint8)}),
                       "has 4 channels", "bad request"),
    "over the size limit": (lambda url: raw(url, b"\0" * (2 ** 20 + 1), 1009), None, "message too big"),
    "disconnect mid-request": (disconnect_mid_request, "", "disconnected before its reply"),
    "connects and never sends": (idle, "", "no request for 1s"),
    "never finishes the handshake": (no_handshake, "", "no websocket handshake in time"),
}


@pytest.fixture(scope="module")
def bad_client_server(backend):
    with running(backend, idle_timeout_s=1.0, max_message_bytes=2 ** 20, max_wait_ms=20) as (server, url):
        yield server, url


@contextlib.contextmanager
def robot_in_background(url: str):
    """A well-behaved client asking for a chunk every 0.2 s on one connection; yields its list of chunks."""
    client, chunks, errors, stop = WebsocketClientPolicy(url), [], [], threading.Event()

    def loop():
        while not stop.is_set():
            try:
                chunks.append(client.infer(GOOD)["actions"])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
                return
            stop.wait(0.2)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        yield chunks
    finally:
        stop.set()
        thread.join()
        client._ws.close()
    assert not errors, errors


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_client_gets_an_error_and_others_are_still_served(bad_client_server, case, caplog):
    server, url = bad_client_server
    act, text, line = BAD_CASES[case]
    caplog.set_level(logging.INFO, "vla_jax.serve")
    with robot_in_background(url) as chunks:
        reply = act(url)
        if text:
            assert text in reply and "\n" not in reply
        deadline = time.time() + 5
        while not [r for r in caplog.records if r.levelno >= logging.WARNING] and time.time() < deadline:
            time.sleep(0.05)
        served_before = len(chunks)
        time.sleep(0.5)
        assert len(chunks) > served_before  # served all along, and after the bad client
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and line in lines[0] and "\n" not in lines[0], lines
    assert all(c.shape == (4, 7) for c in chunks)
    assert served(url).shape == (4, 7)  # and a new client after it
