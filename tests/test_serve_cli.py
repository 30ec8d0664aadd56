"""``python -m vla_jax.serve`` as a process: serves an export folder without importing JAX, answers the request in
flight on SIGTERM and exits 0; start-up errors are one line with exit code 2."""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from data_fixtures import tabletop_dir  # noqa: F401  (fixture)
from openpi_client.websocket_client_policy import WebsocketClientPolicy
from serve_helpers import free_port, serve_export, serve_run, tabletop_obs, tabletop_request
from websockets.exceptions import ConnectionClosed

from vla_jax.serve.__main__ import main, workdir_step
from vla_jax.train import testing

pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used:DeprecationWarning")

# main() in a fresh interpreter; exit code 7 if JAX was imported on the way
NO_JAX = ("import sys; from vla_jax.serve.__main__ import main; code = main(sys.argv[1:]); "
          "sys.exit(7 if 'jax' in sys.modules else code)")


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("server did not come up")


def test_sigterm_answers_the_request_in_flight_then_exits_0_without_jax(tabletop_dir):  # noqa: F811
    port = free_port()
    cmd = [sys.executable, "-c", NO_JAX, f"--policy={serve_export(tabletop_dir)}", "--backend=onnx",
           "--robot=single_arm", f"--port={port}", "--max_wait_ms=3000", "--threads=1"]
    env = {**testing.env(), "JAX_PLATFORMS": ""}
    process = subprocess.Popen(cmd, env=env, cwd=testing.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        wait_healthy(port, process)
        url = f"ws://127.0.0.1:{port}"
        robot, bystander = WebsocketClientPolicy(url), WebsocketClientPolicy(url)
        assert robot.get_server_metadata()["backend"] == "onnx"
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            # waits in the batcher for the bystander's request (max_wait_ms=3000) when SIGTERM arrives
            reply = pool.submit(robot.infer, tabletop_request(tabletop_obs(0)))
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            assert reply.result(timeout=30)["actions"].shape == (4, 7)
        with pytest.raises(ConnectionClosed) as closed:
            bystander._ws.recv(timeout=30)
        assert closed.value.rcvd.code == 1001  # going away
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "stopping: 1 request(s) in flight" in err and "stopped after 1 request(s)" in err


def test_torch_backend_serves_without_jax(tabletop_dir):  # noqa: F811
    folder = serve_export(tabletop_dir)
    code = ("import sys; from vla_jax.serve.backends import load_backend; from vla_jax.serve.robots import get_robot; "
            "from vla_jax.serve.server import PolicyServer; "
            f"PolicyServer(load_backend('torch', policy={folder!r}), get_robot('droid')).warm_up(); "
            "sys.exit(7 if 'jax' in sys.modules else 0)")
    out = subprocess.run([sys.executable, "-c", code], env={**testing.env(), "JAX_PLATFORMS": ""}, cwd=testing.REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("args, message", [
    (["--robot=nope"], "unknown robot 'nope'"),
    (["--robot=libero"], "has no normalization statistics for dataset 'libero'"),
    (["--robot=droid_cartesian"], "dataset 'droid' has 8-D state statistics, the robot's state has 7 dims"),
    (["--robot=bimanual"], "state has 14 dims, the model at most 9"),
    (["--robot=single_arm", "--backend=jax"], "--backend=jax serves a training checkpoint"),
    (["--robot=single_arm", "--backend=tensorrt"], "--backend=tensorrt is not one of jax, torch, onnx"),
])
def test_startup_errors_are_one_line(tabletop_dir, capsys, args, message):  # noqa: F811
    assert main([f"--policy={serve_export(tabletop_dir)}", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0, err


def test_startup_errors_of_sources_are_one_line(tabletop_dir, capsys, tmp_path):  # noqa: F811
    for args, message in [([f"--policy={tmp_path}"], "is not an export folder"),
                          ([f"--policy={tmp_path}", f"--workdir={tmp_path}"], "exactly one of --policy"),
                          ([f"--workdir={serve_run(tabletop_dir)}:99"], "step 99 does not exist")]:
        assert main([*args, "--robot=single_arm"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and err.count("\n") == 0, err
    assert workdir_step("runs/a:200") == ("runs/a", 200) and workdir_step("runs/a") == ("runs/a", None)
    assert workdir_step("/c:/x") == ("/c:/x", None)
