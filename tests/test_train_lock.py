"""One writer per workdir (vla_jax/train/workdir_lock.py): the lock file itself, trainers refused on a
locked workdir without touching it, stale locks taken over; and the trainer's other one-line outcomes
(config.json after the resume checks, a finished run, a missing config file, bad flag values)."""

import hashlib
import json
import os
import shutil
import shlex
import signal
import socket
import subprocess
import sys
import time

import pytest

from vla_jax.train import testing
from vla_jax.train import workdir_lock as wl
from vla_jax.train.metrics import read_metrics

from test_train_resume import complete_steps, wait_for


def snapshot(workdir) -> dict[str, str | None]:
    """{relative path: sha256 of a file, None for a directory} of everything in ``workdir`` but the lock."""
    out = {}
    for root, dirs, files in os.walk(workdir):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), workdir)] = None
        for name in files:
            path = os.path.join(root, name)
            if os.path.relpath(path, workdir) != wl.LOCK_NAME:
                with open(path, "rb") as f:
                    out[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
    return out


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def write_lock(workdir, **fields) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": "test"}
    (workdir / wl.LOCK_NAME).write_text(json.dumps({**holder, **fields}))


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("train:")]


# ----------------------------------------------------------------------------- the lock file
def test_lock_file_names_its_holder_and_release_removes_it(tmp_path):
    lock = wl.WorkdirLock(str(tmp_path / "run"))
    lock.acquire()
    content = json.loads((tmp_path / "run" / wl.LOCK_NAME).read_text())
    assert content["pid"] == os.getpid() and content["host"] == socket.gethostname()
    assert abs(content["started"] - time.time()) < 60 and content["started_utc"].endswith(" UTC")
    assert content["command"] == shlex.join(sys.orig_argv)  # this process's command line (pytest or its worker)
    lock.release()
    assert os.listdir(tmp_path / "run") == []


def test_second_lock_is_refused_with_one_line_naming_the_holder(tmp_path):
    first = wl.WorkdirLock(str(tmp_path))
    first.acquire()
    try:
        with pytest.raises(wl.WorkdirLockError) as err:
            wl.WorkdirLock(str(tmp_path)).acquire()
        msg = str(err.value)
        assert "\n" not in msg and f"pid {os.getpid()} on {socket.gethostname()} since {first.holder.since}" in msg
        assert msg.startswith(f"workdir {tmp_path} is in use by another trainer")
    finally:
        first.release()


def test_stale_lock_of_a_dead_pid_is_taken_over_with_a_notice(tmp_path):
    pid = dead_pid()
    write_lock(tmp_path, pid=pid)
    notices = []
    lock = wl.WorkdirLock(str(tmp_path), notice=notices.append)
    lock.acquire()
    assert len(notices) == 1 and f"left by pid {pid} on {socket.gethostname()}" in notices[0]
    assert json.loads((tmp_path / wl.LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_of_a_reused_pid_is_stale(tmp_path):
    write_lock(tmp_path, started=1_000.0)  # our pid, but this process started long after 1970
    notices = []
    lock = wl.WorkdirLock(str(tmp_path), notice=notices.append)
    lock.acquire()
    assert len(notices) == 1
    lock.release()


def test_lock_of_another_host_is_never_stale(tmp_path):
    write_lock(tmp_path, pid=dead_pid(), host="elsewhere.example")
    before = (tmp_path / wl.LOCK_NAME).read_bytes()
    with pytest.raises(wl.WorkdirLockError) as err:
        wl.WorkdirLock(str(tmp_path)).acquire()
    assert "on another host" in str(err.value) and f"delete {tmp_path / wl.LOCK_NAME}" in str(err.value)
    assert (tmp_path / wl.LOCK_NAME).read_bytes() == before


def test_unreadable_lock_is_refused(tmp_path):
    (tmp_path / wl.LOCK_NAME).write_text("")
    with pytest.raises(wl.WorkdirLockError, match="unreadable lock file"):
        wl.WorkdirLock(str(tmp_path)).acquire()


def test_release_leaves_a_lock_that_is_not_ours(tmp_path):
    lock = wl.WorkdirLock(str(tmp_path))
    lock.acquire()
    write_lock(tmp_path, command="someone else")  # replaced by hand while we held it
    lock.release()
    assert json.loads((tmp_path / wl.LOCK_NAME).read_text())["command"] == "someone else"


def test_concurrent_takeover_of_a_stale_lock_has_one_winner(tmp_path):
    write_lock(tmp_path, pid=dead_pid())
    code = ("import sys, time\nfrom vla_jax.train import workdir_lock as wl\n"
            "lock = wl.WorkdirLock(sys.argv[1])\ntime.sleep(float(sys.argv[2]) - time.time())\n"
            "try:\n    lock.acquire()\nexcept wl.WorkdirLockError as e:\n    print(e)\n    sys.exit(1)\n"
            "time.sleep(2)\nlock.release()\n")
    go = time.time() + 20  # every process has imported the module (and JAX) by then, even on a loaded machine
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(go)], cwd=testing.REPO,
                              env=testing.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert sorted(rc for rc, _, _ in outs) == [0, 1, 1, 1], outs
    assert all("in use by another trainer" in out for rc, out, _ in outs if rc == 1), outs
    assert not (tmp_path / wl.LOCK_NAME).exists()


# ----------------------------------------------------------------------------- trainers on a saved run
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    """A workdir as a finished tiny run leaves it (config.json, metrics.jsonl, a checkpoint at step 8),
    written in-process without compiling a train step."""
    from vla_jax.models.vla import VLA, make_config
    from vla_jax.train import checkpoint as ckpt_lib
    from vla_jax.train import sharding as sh
    from vla_jax.train import state as st
    from vla_jax.train.metrics import MetricsWriter
    from vla_jax.train.optimizer import make_optimizer

    workdir = tmp_path_factory.mktemp("saved")
    cfg = testing.tiny_config()
    model = VLA(make_config(cfg.model))
    tx, _ = make_optimizer(cfg.optimizer, cfg.num_steps)
    state, _ = st.create_train_state(model, tx, sh.make_mesh({}), sh.get_rules("fsdp"), 0, True)
    ck = ckpt_lib.Checkpointer(str(workdir), every=4, async_save=False)
    ck.save(8, state, data_state=None, config=cfg.to_dict(), norm_stats={})
    ck.close()
    (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2, sort_keys=True))
    writer = MetricsWriter(str(workdir), enabled=True)
    for step in range(1, 9):
        writer.write(step, {"loss": 1.0 / step})
    writer.close()
    return workdir


def copy_of(saved_run, tmp_path):
    shutil.copytree(saved_run, tmp_path / "run")
    return tmp_path / "run"


def test_trainer_on_a_locked_workdir_is_refused_and_changes_nothing(saved_run, tmp_path):
    workdir = copy_of(saved_run, tmp_path)
    lock = wl.WorkdirLock(str(workdir))
    lock.acquire()  # this test process is the live holder
    try:
        before = snapshot(workdir)
        proc = testing.run_train(workdir, {"optimizer.lr": 3e-4, "num_steps": 60, "checkpoint.every": 10})
        assert proc.returncode == 1
        lines = error_lines(proc)
        assert lines == [f"error: workdir {workdir} is in use by another trainer ({lock.holder.describe()}; "
                         f"lock file {workdir / wl.LOCK_NAME}); wait for it to finish or use another --workdir"]
        assert snapshot(workdir) == before
    finally:
        lock.release()


def test_finished_run_says_so_and_a_stale_lock_is_taken_over(saved_run, tmp_path):
    workdir = copy_of(saved_run, tmp_path)
    pid = dead_pid()
    write_lock(workdir, pid=pid)
    config_json = (workdir / "config.json").read_bytes()
    proc = testing.run_train(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notice = error_lines(proc)
    assert len(notice) == 1 and notice[0].startswith(f"warning: workdir lock {workdir / wl.LOCK_NAME} was left "
                                                     f"by pid {pid} on {socket.gethostname()}"), notice
    assert "already finished at step 8 (config.num_steps=8)" in proc.stdout
    assert "loss" not in proc.stdout and "compiled" not in proc.stdout
    assert (workdir / "config.json").read_bytes() == config_json
    assert not (workdir / wl.LOCK_NAME).exists()


def test_refused_resume_leaves_config_json_unchanged(saved_run, tmp_path):
    workdir = copy_of(saved_run, tmp_path)
    config_json = (workdir / "config.json").read_bytes()
    proc = testing.run_train(workdir, {"model.max_action_dim": 5, "num_steps": 20})
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "config.model.max_action_dim=6 (checkpoint) vs 5 (now)" in lines[0], lines
    assert (workdir / "config.json").read_bytes() == config_json
    assert not (workdir / wl.LOCK_NAME).exists()


def test_multi_process_trainer_is_refused_by_process_0(saved_run, tmp_path):
    workdir = copy_of(saved_run, tmp_path)
    lock = wl.WorkdirLock(str(workdir))
    lock.acquire()
    try:
        before = snapshot(workdir)
        proc = testing.run_launcher(2, 2, lambda _: [f"--workdir={workdir}", *testing.flag_args()], timeout=300)
        assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert errors and all(ln.startswith(f"error: workdir {workdir} is in use by another trainer "
                                            f"({lock.holder.describe()}") for ln in errors), proc.stderr[-3000:]
        assert snapshot(workdir) == before
    finally:
        lock.release()


# ----------------------------------------------------------------------------- two real trainers
TWO = {"num_steps": 10_000, "checkpoint.every": 2, "log_every": 1}


@pytest.mark.slow  # ~60 s on 2 cores: the first trainer compiles and trains a few steps
def test_second_trainer_is_refused_while_the_first_runs(tmp_path):
    workdir = tmp_path / "run"
    first = subprocess.Popen(testing.train_cmd(workdir, TWO), cwd=testing.REPO, env=testing.env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = workdir / "metrics.jsonl"
    wait_for(lambda: len(complete_steps(workdir)) >= 2 and metrics.exists() and len(metrics.read_text().splitlines())
             >= 5, first, what="two checkpoints")
    first.send_signal(signal.SIGSTOP)  # alive and holding the lock, but its files stand still for the comparison
    try:
        time.sleep(1.0)  # let writes already in the kernel settle
        before = snapshot(workdir)
        second = testing.run_train(workdir, {**TWO, "optimizer.lr": 3e-4})
        assert second.returncode == 1
        lines = error_lines(second)
        assert len(lines) == 1 and lines[0].startswith(f"error: workdir {workdir} is in use by another trainer "
                                                       f"(pid {first.pid} on {socket.gethostname()} since "), lines
        assert snapshot(workdir) == before
    finally:
        first.send_signal(signal.SIGCONT)
    first.send_signal(signal.SIGTERM)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-3000:]
    assert json.loads((workdir / "config.json").read_text())["optimizer"]["lr"] == testing.tiny_config().optimizer.lr
    rows = read_metrics(workdir)
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    assert not (workdir / wl.LOCK_NAME).exists()


@pytest.mark.slow  # ~40 s on 2 cores (the compilation is cached by the test above)
def test_two_trainers_started_together_one_wins(tmp_path):
    workdir = tmp_path / "run"
    procs = [subprocess.Popen(testing.train_cmd(workdir, {**TWO, "optimizer.lr": lr}), cwd=testing.REPO,
                              env=testing.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for lr in (1e-3, 3e-4)]
    loser = None
    t = time.time()
    while loser is None:
        loser = next((p for p in procs if p.poll() is not None), None)
        assert time.time() - t < 240, "neither trainer stopped"
        time.sleep(0.1)
    winner = procs[1 - procs.index(loser)]
    _, err = loser.communicate()
    assert loser.returncode == 1, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        f"error: workdir {workdir} is in use by another trainer (pid {winner.pid} "), err[-3000:]
    wait_for(lambda: len(complete_steps(workdir)) >= 1, winner, what="a checkpoint of the winner")
    winner.send_signal(signal.SIGTERM)
    _, err = winner.communicate(timeout=120)
    assert winner.returncode == 0, err[-3000:]
    assert not (workdir / wl.LOCK_NAME).exists()


# ----------------------------------------------------------------------------- other one-line outcomes
def test_missing_config_file_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vla_jax.train", "--config=nope.py", f"--workdir={tmp_path / 'w'}"],
                          cwd=testing.REPO, env=testing.env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "error: config file 'nope.py' (--config) does not exist\n"
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("flag, message", [
    ("--config.seed=", "error: flag --config.seed=: invalid literal for int() with base 10: ''"),
    ("--config.seed=abc", "error: flag --config.seed=abc: invalid literal for int() with base 10: 'abc'"),
    ("--nope=1", "error: Unknown command line flag 'nope'"),
    ("--config.nokey=1", "error: unknown config key: nokey"),
])
def test_bad_flags_are_one_whole_line(tmp_path, flag, message):
    proc = subprocess.run([sys.executable, "-m", "vla_jax.train", *testing.flag_args(), flag,
                           f"--workdir={tmp_path / 'w'}"], cwd=testing.REPO, env=testing.env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == message + "\n"
    assert not (tmp_path / "w").exists()
