"""End-to-end runs of ``python -m vla_jax.train`` in subprocesses: exact resume after SIGKILL,
SIGTERM preemption, non-finite steps (loss, gradient norm, parameters), a checkpoint from another model,
and the metrics plot."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from vla_jax.models.vla import VLA, make_config
from vla_jax.train import checkpoint as ckpt_lib
from vla_jax.train import sharding as sh
from vla_jax.train import state as st
from vla_jax.train import testing
from vla_jax.train.metrics import read_metrics
from vla_jax.train.optimizer import make_optimizer

from test_train_init_from import write_paligemma_npz


def complete_steps(workdir) -> list[int]:
    root = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(root):
        return []
    import etils.epath as epath
    return sorted(int(n) for n in os.listdir(root) if n.isdigit() and ckpt_lib.is_complete(epath.Path(root) / n))


def restore(workdir, step, overrides=None):
    """The checkpoint's TrainState on this (1-device) process."""
    cfg = testing.tiny_config(**(overrides or {}))
    model = VLA(make_config(cfg.model))
    tx, _ = make_optimizer(cfg.optimizer, cfg.num_steps)
    mesh = sh.make_mesh({})
    abstract, shardings = st.state_shardings(model, tx, mesh, sh.get_rules("fsdp"), 0, True)
    ck = ckpt_lib.Checkpointer(str(workdir), every=1)
    state, _, _ = ck.restore(step, st.with_shardings(abstract, shardings))
    ck.close()
    return jax.device_get(state)


def wait_for(predicate, proc, timeout=240.0, what=""):
    t = time.time()
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training exited ({proc.returncode}) before {what}: {err[-2000:]}")
        if time.time() - t > timeout:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def start(workdir, overrides, devices=1):
    return subprocess.Popen(testing.train_cmd(workdir, overrides), cwd=testing.REPO, env=testing.env(devices),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ----------------------------------------------------------------------------- exact resume
RESUME = {"num_steps": 24, "checkpoint.every": 2, "log_every": 1, "mesh.shape.fsdp": 2}


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    proc = testing.run_train(straight, RESUME, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = start(killed, RESUME, devices=2)
    wait_for(lambda: any(s >= 4 for s in complete_steps(killed)), run, what="a checkpoint at step >= 4")
    run.send_signal(signal.SIGKILL)  # no handler, no final save: a real crash
    run.communicate()
    assert run.returncode == -signal.SIGKILL
    crashed_at = complete_steps(killed)
    assert crashed_at and max(crashed_at) < RESUME["num_steps"], f"run finished before the kill: {crashed_at}"

    proc = testing.run_train(killed, RESUME, devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from step {max(crashed_at)}" in proc.stdout

    a, b = read_metrics(straight), read_metrics(killed)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 25))
    for key in ("loss", "loss/flow", "loss/text", "grad_norm", "lr"):
        assert [r[key] for r in a] == [r[key] for r in b], key

    final_a, final_b = restore(straight, 24), restore(killed, 24)
    leaves_a = jax.tree_util.tree_flatten_with_path(final_a)[0]
    leaves_b = jax.tree_util.tree_leaves(final_b)
    assert len(leaves_a) == len(leaves_b)
    for (path, x), y in zip(leaves_a, leaves_b):
        assert np.array_equal(np.asarray(x), np.asarray(y)), sh.path_str(path)


# ----------------------------------------------------------------------------- SIGTERM, NaN, mismatch
@pytest.fixture(scope="module")
def preempted(tmp_path_factory):
    """A long run stopped by SIGTERM after a few steps: (workdir, returncode, stdout, stderr)."""
    workdir = tmp_path_factory.mktemp("preempted")
    npz = workdir / "paligemma.npz"  # the run starts from PaliGemma-layout weights (config.init.from_npz)
    write_paligemma_npz(npz, testing.tiny_config(), scale=0.05)
    run = start(workdir, {"num_steps": 100_000, "checkpoint.every": 5, "log_every": 1, "init.from_npz": npz})
    metrics = workdir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 7, run, what="7 logged steps")
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    return workdir, run.returncode, out, err


def test_sigterm_saves_a_checkpoint_and_exits_zero(preempted):
    workdir, rc, out, err = preempted
    assert rc == 0, err[-3000:]
    steps = complete_steps(workdir)
    last = read_metrics(workdir)[-1]["step"]
    assert steps and steps[-1] == last >= 7
    assert f"SIGTERM: saved a checkpoint at step {last}" in out
    assert 5 in steps  # the periodic one is kept too
    report = (workdir / "init_report.txt").read_text()
    assert report.startswith("init from npz: 26 loaded, ") and "MISMATCHED  llm/embedding" in report
    assert "init from npz: 26 loaded" in out


def test_every_save_writes_a_params_item_the_tools_read(preempted):
    workdir, _, _, _ = preempted
    step = complete_steps(workdir)[-1]
    assert (workdir / "checkpoints" / str(step) / "params" / "_METADATA").exists()
    state = restore(workdir, step)
    for ema, want in ((False, state.params), (True, state.ema_params)):
        got = ckpt_lib.load_params(str(workdir), step, ema=ema).params
        assert jax.tree.structure(got) == jax.tree.structure(want)
        assert all(np.array_equal(np.asarray(x, np.float32), y) for x, y in zip(jax.tree.leaves(want),
                                                                                jax.tree.leaves(got)))


def assert_all_checkpoints_finite(workdir) -> None:
    """Every complete checkpoint in ``workdir`` has finite parameters and EMA parameters."""
    for step in complete_steps(workdir):
        for ema in (False, True):
            params = ckpt_lib.load_params(str(workdir), step, ema=ema).params
            assert all(np.isfinite(np.asarray(x, np.float32)).all() for x in jax.tree.leaves(params)), (step, ema)


def nonfinite_error(proc) -> tuple[str, int]:
    """The run's one error line (exit 1, no traceback) and the step it names."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    line = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1]
    assert line.startswith("error: non-finite ") and "step not applied, stopped without saving" in line, line
    return line, int(line.split(" at step ")[1].split()[0])


# lr = 1e30: the first update blows the parameters up (finite), the next loss is not finite;
# lr = 1e9: the parameters grow large but finite, then the loss is finite and its gradient norm is not;
# lr = 1e39 (inf in float32): the first update makes the parameters non-finite.
@pytest.mark.parametrize("lr,quantity", [(1e30, "loss"), pytest.param(1e9, "gradient norm", marks=pytest.mark.slow),
                                         pytest.param(1e39, "parameters", marks=pytest.mark.slow)])
def test_nonfinite_step_stops_naming_step_and_quantity_and_keeps_last_good_checkpoint(preempted, tmp_path, lr,
                                                                                      quantity):
    source, _, _, _ = preempted
    workdir = tmp_path / "nan"
    shutil.copytree(source, workdir)
    start_step = complete_steps(workdir)[-1]
    proc = testing.run_train(workdir, {"num_steps": start_step + 6, "checkpoint.every": 1, "log_every": 1,
                                       "optimizer.lr": lr})
    line, bad_step = nonfinite_error(proc)
    assert line.startswith(f"error: non-finite {quantity} at step {bad_step} "), line
    assert start_step < bad_step <= start_step + 6
    steps = complete_steps(workdir)
    assert max(steps) == bad_step - 1, (steps, bad_step)  # nothing at or after the bad step
    assert f"last good checkpoint: {workdir / 'checkpoints' / str(bad_step - 1)}" in line
    assert_all_checkpoints_finite(workdir)
    good = restore(workdir, bad_step - 1)
    assert int(good.step) == bad_step - 1
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(good.opt_state))


@pytest.mark.slow  # ~30-40 s on 2 cores: compiles a model with keypoints
def test_adam_eps_zero_nan_parameters_are_never_saved(tmp_path):
    # eps = 0: Adam divides 0 by 0 for the keypoint parameters that get no gradient, at the first step
    addons = ("conv_stem(channels=(8, 8))", "location_tokens(grid=8, first_id=4)", "keypoints(num=4)",
              "prefix_readout")
    proc = testing.run_train(tmp_path, {"num_steps": 6, "checkpoint.every": 1, "optimizer.eps": 0,
                                        "model.addons": addons})
    line, _ = nonfinite_error(proc)
    assert line.startswith("error: non-finite parameters at step 1 ") and line.endswith("last good checkpoint: none")
    assert complete_steps(tmp_path) == [] and "done at step" not in proc.stdout


def test_checkpoint_of_another_model_fails_with_one_line(preempted, tmp_path):
    source, _, _, _ = preempted
    workdir = tmp_path / "other"
    shutil.copytree(source, workdir)
    proc = testing.run_train(workdir, {"model.max_action_dim": 5})
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr
    assert lines[-1].startswith("error: checkpoint ") and "config.model.max_action_dim=6 (checkpoint) vs 5 (now)" \
        in lines[-1], lines[-3:]


def test_init_from_checkpoint_loads_every_matching_parameter(preempted, tmp_path):
    source, _, _, _ = preempted
    workdir = tmp_path / "stage2"
    # lr 0: the one update leaves the parameters as initialized; a different action dim leaves two
    # projections (and their biases) fresh
    proc = testing.run_train(workdir, {"num_steps": 1, "checkpoint.every": 1, "optimizer.lr": 0.0,
                                       "model.max_action_dim": 5, "init.from_checkpoint": f"{source}:5"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = (workdir / "init_report.txt").read_text()
    assert report.startswith(f"init from checkpoint {source}:5: ") and "MISMATCHED  action_in_proj/w" in report
    want = restore(source, 5)
    got = restore(workdir, 1, {"model__max_action_dim": 5})
    for (path, x), (_, y) in zip(jax.tree_util.tree_flatten_with_path(want.params)[0],
                                 jax.tree_util.tree_flatten_with_path(got.params)[0]):
        if x.shape == y.shape:
            assert np.array_equal(np.asarray(x), np.asarray(y)), sh.path_str(path)
    proc = testing.run_train(tmp_path / "none", {"init.from_checkpoint": str(tmp_path / "missing")})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: config.init.from_checkpoint="), proc.stderr[-500:]
    proc = testing.run_train(tmp_path / "both", {"init.from_checkpoint": f"{source}:5", "init.from_npz": "x.npz"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: config.init.from_npz and config.init.from_checkpoint are both set; keep one"), proc.stderr[-500:]


def test_plot_metrics_writes_png(preempted, tmp_path):
    workdir, _, _, _ = preempted
    out = tmp_path / "curves.png"
    proc = subprocess.run([sys.executable, "tools/plot_metrics.py", f"--workdir={workdir}", f"--out={out}"],
                          cwd=testing.REPO, env=testing.env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    perf = json.loads((workdir / "perf.json").read_text())  # what the MFU panel names as its peak
    assert perf["peak_source"] == "config.metrics.peak_flops_per_device" and perf["peak_flops_per_device"] == 1e11
    assert perf["num_devices"] >= 1 and perf["flops_per_step"] > 0
