"""Checkpoint integrity: per-step checksums, fallback from a damaged newest step, one-line errors for damaged
files, save failures (a full filesystem, an injected ENOSPC) and the pruned quarantine."""

import errno
import importlib.util
import json
import os
import shlex
import shutil
import subprocess

import jax
import numpy as np
import pytest

from vla_jax.train import checkpoint as ckpt_lib
from vla_jax.train import sharding as sh
from vla_jax.train import testing
from vla_jax.train.metrics import read_metrics

RUN = {"num_steps": 4, "checkpoint.every": 2, "log_every": 1}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished tiny run with checkpoints at steps 2 and 4 (never modified: tests copy it)."""
    workdir = tmp_path_factory.mktemp("integrity") / "run"
    proc = testing.run_train(workdir, RUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ckpt_lib.available_steps(str(workdir)) == [2, 4]
    return workdir


def copy_run(run, tmp_path, name="copy"):
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


def array_files(step_dir) -> list[str]:
    """The OCDBT data files of a step (the arrays), relative to the step directory."""
    out = []
    for d, _, files in os.walk(step_dir):
        if os.path.basename(d) == "d":
            out += [os.path.relpath(os.path.join(d, f), step_dir) for f in files]
    return sorted(out)


def rot(path, seed=0) -> None:
    """Overwrites 4 KiB (the whole file if smaller) in the middle of ``path`` with random bytes; size unchanged."""
    size = os.path.getsize(path)
    n = min(4096, size)
    with open(path, "r+b") as f:
        f.seek((size - n) // 2)
        f.write(np.random.default_rng(seed).bytes(n))


def one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text, text
    return text


# ----------------------------------------------------------------------------- manifest
def test_every_step_has_a_manifest_of_all_its_files(run):
    for step in (2, 4):
        step_dir = run / "checkpoints" / str(step)
        ckpt_lib.verify_step(step_dir)
        manifest = (step_dir / ckpt_lib.MANIFEST).read_text()
        listed = set(json.loads(manifest)["files"])
        on_disk = {os.path.relpath(os.path.join(d, f), step_dir) for d, _, fs in os.walk(step_dir) for f in fs}
        assert listed == on_disk - {ckpt_lib.MANIFEST}
        assert set(array_files(step_dir)) <= listed and len(array_files(step_dir)) >= 10


# ----------------------------------------------------------------------------- bit rot in every array file
def test_bit_rot_in_any_array_file_is_detected_and_the_previous_step_chosen(run, tmp_path):
    workdir = copy_run(run, tmp_path)
    step_dir = workdir / "checkpoints" / "4"
    files = array_files(step_dir)
    for i, name in enumerate(files):
        path = step_dir / name
        original = path.read_bytes()
        rot(path, seed=i)
        with pytest.raises(ckpt_lib.CorruptCheckpointError) as e:
            ckpt_lib.verify_step(step_dir)
        assert one_line(e.value).startswith("checkpoint step 4 ") and f"{name} fails its checksum" in str(e.value)
        with pytest.raises(ckpt_lib.CorruptCheckpointError) as e:
            ckpt_lib.load_params(str(workdir))
        assert name in one_line(e.value) and str(e.value).endswith("pass another step (--step; intact steps: 2)")
        path.write_bytes(original)
    ckpt_lib.verify_step(step_dir)

    rot(step_dir / files[0])  # the trainer's choice: the corrupt step moves aside, the previous one resumes
    checkpointer = ckpt_lib.Checkpointer(str(workdir), every=2)
    checkpointer.close()
    assert checkpointer.latest_step() == 2 and ckpt_lib.available_steps(str(workdir)) == [2]
    assert os.listdir(workdir / ckpt_lib.QUARANTINE) == ["4-0"]


@pytest.mark.slow
def test_bit_rot_in_the_newest_step_resumes_from_the_previous_one_bitwise(run, tmp_path):
    workdir = copy_run(run, tmp_path)
    name = array_files(workdir / "checkpoints" / "4")[0]
    rot(workdir / "checkpoints" / "4" / name)
    proc = testing.run_train(workdir, RUN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if "checkpoint step" in ln]
    assert len(lines) == 2, proc.stderr[-3000:]
    assert "checkpoint step 4 " in lines[0] and f"{name} fails its checksum" in lines[0], lines
    assert "falling back to checkpoint step 2, the newest intact one" in lines[1], lines
    assert "resumed from step 2" in proc.stdout

    a, b = read_metrics(run), read_metrics(workdir)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for key in ("loss", "grad_norm", "lr"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    ckpt_lib.verify_step(workdir / "checkpoints" / "4")
    from test_train_resume import restore
    leaves_a = jax.tree_util.tree_flatten_with_path(restore(run, 4))[0]
    leaves_b = jax.tree_util.tree_leaves(restore(workdir, 4))
    assert len(leaves_a) == len(leaves_b)
    for (path, x), y in zip(leaves_a, leaves_b):
        assert np.array_equal(np.asarray(x), np.asarray(y)), sh.path_str(path)


def test_export_of_a_rotten_newest_step_is_refused_with_a_step_hint(run, tmp_path, capsys):
    workdir = copy_run(run, tmp_path)
    name = array_files(workdir / "checkpoints" / "4")[-1]
    rot(workdir / "checkpoints" / "4" / name)
    spec = importlib.util.spec_from_file_location("tool_export", os.path.join(testing.REPO, "tools", "export.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rc = tool.main([f"--workdir={workdir}", f"--out={tmp_path / 'out'}", "--format=pytorch"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert "checkpoint step 4 " in err and name in err and "pass another step (--step; intact steps: 2)" in err, err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- other damage: one line each
def _damage(step_dir, kind: str) -> str:
    """Damages ``step_dir``; returns the text the one-line error names."""
    data = os.path.join(step_dir, array_files(step_dir)[0])
    if kind == "truncated":
        with open(data, "r+b") as f:
            f.truncate(os.path.getsize(data) // 2)
        return array_files(step_dir)[0]
    if kind == "deleted":
        os.remove(data)
        return os.path.relpath(data, step_dir)
    if kind == "garbage_metadata":
        (step_dir / "state" / "_METADATA").write_bytes(b"\xff\x00garbage" * 64)
        return "state/_METADATA"
    if kind == "garbage_params_metadata":
        (step_dir / "params" / "_METADATA").write_bytes(b"\xff\x00garbage" * 64)
        return "params"
    assert kind == "no_step_metadata"
    (step_dir / ckpt_lib.STEP_METADATA).unlink()
    return ckpt_lib.STEP_METADATA


@pytest.mark.parametrize("kind", ["truncated", "deleted", "garbage_metadata", "no_step_metadata"])
def test_damaged_files_are_one_line(run, tmp_path, kind):
    workdir = copy_run(run, tmp_path)
    named = _damage(workdir / "checkpoints" / "4", kind)
    with pytest.raises(ckpt_lib.CorruptCheckpointError) as e:
        ckpt_lib.verify_step(workdir / "checkpoints" / "4")
    assert one_line(e.value).startswith("checkpoint step 4 ") and named in str(e.value)
    with pytest.raises(ckpt_lib.CorruptCheckpointError) as e:
        ckpt_lib.load_params(str(workdir))
    assert named in one_line(e.value) and "intact steps: 2" in str(e.value)
    checkpointer = ckpt_lib.Checkpointer(str(workdir), every=2)
    checkpointer.close()
    assert checkpointer.latest_step() == 2


@pytest.mark.parametrize("kind", ["truncated", "deleted", "garbage_params_metadata"])
def test_damaged_steps_without_a_manifest_are_one_line(run, tmp_path, kind):
    """Steps written before checksums existed: accepted when they restore, one line when they do not."""
    workdir = copy_run(run, tmp_path)
    step_dir = workdir / "checkpoints" / "4"
    (step_dir / ckpt_lib.MANIFEST).unlink()
    assert ckpt_lib.load_params(str(workdir)).step == 4
    _damage(step_dir, kind)
    with pytest.raises(ckpt_lib.CorruptCheckpointError) as e:
        ckpt_lib.load_params(str(workdir))
    assert one_line(e.value).startswith("checkpoint step 4 ") and "intact steps: 2" in str(e.value)


def test_non_finite_parameters_are_refused(run, tmp_path):
    """A step whose bits match its manifest but whose parameters are NaN (saved that way) is not loaded."""
    workdir = copy_run(run, tmp_path)
    params = ckpt_lib.load_params(str(workdir), 4).params
    params = jax.tree.map(lambda x: np.full_like(x, np.nan), params)
    cfg = testing.tiny_config()
    out = tmp_path / "nan"
    ckpt_lib.write_checkpoint(str(out), params, cfg, None, step=3)
    ckpt_lib.verify_step(out / "checkpoints" / "3")
    with pytest.raises(ckpt_lib.CorruptCheckpointError) as e:
        ckpt_lib.load_params(str(out))
    assert "holds non-finite parameters" in one_line(e.value) and "intact steps: none" in str(e.value)


# ----------------------------------------------------------------------------- save failures
@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
def test_injected_enospc_is_one_line_and_keeps_the_previous_step(tmp_path, monkeypatch):
    state = {"params": {"params": {"w": jax.numpy.ones((64, 64))}}, "step": jax.numpy.int32(0)}
    checkpointer = ckpt_lib.Checkpointer(str(tmp_path), every=1)
    checkpointer.save(1, state, data_state={"i": 1}, config={"model": {}}, norm_stats=None)
    checkpointer.wait()

    def full(self, directory, args):
        raise OSError(errno.ENOSPC, "No space left on device", str(directory))

    monkeypatch.setattr(ckpt_lib.IteratorStateHandler, "save", full)
    with pytest.raises(ckpt_lib.CheckpointError) as e:
        checkpointer.save(2, state, data_state={"i": 2}, config={"model": {}}, norm_stats=None)
        checkpointer.wait()
    checkpointer.close()  # after a failed save: closes without raising again
    assert one_line(e.value).startswith(f"saving checkpoint step 2 to {tmp_path / 'checkpoints'} failed: ")
    assert "No space left on device" in str(e.value) and "step 1 is the newest checkpoint" in str(e.value)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1"]  # the partial save is gone
    ckpt_lib.verify_step(tmp_path / "checkpoints" / "1")


UNSHARE = shutil.which("unshare") and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not UNSHARE, reason="needs `unshare -m` (root in a mount namespace) to mount a small tmpfs")
def test_full_filesystem_stops_the_run_with_one_line(tmp_path):
    """The run directory on a 3 MiB tmpfs: the first checkpoint fits, a later one does not."""
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    cmd = shlex.join(map(str, testing.train_cmd(mnt / "run", {"num_steps": 40, "checkpoint.every": 2, "log_every": 1})))
    script = (f"mount -t tmpfs -o size=3m tmpfs {mnt} && {{ {cmd}; echo RC=$? >&2; }}; "
              f"cp -a {mnt}/run {out}")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=testing.REPO, env=testing.env(),
                          capture_output=True, text=True, timeout=600)
    err = proc.stderr
    assert "RC=1" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith("error: saving checkpoint step ") and "failed: " in lines[0], err
    assert "No space left" in lines[0] or "RESOURCE_EXHAUSTED" in lines[0], lines[0]
    failed = int(lines[0].split("saving checkpoint step ")[1].split()[0])
    steps = ckpt_lib.available_steps(str(out))
    assert steps and max(steps) < failed and f"step {max(steps)} is the newest checkpoint" in lines[0]
    for step in steps:
        ckpt_lib.verify_step(out / "checkpoints" / str(step))
    assert max(r["step"] for r in read_metrics(out)) <= failed + 2  # stopped once known, at the next save at the latest
    assert len(err.splitlines()) < 30, err[-3000:]


# ----------------------------------------------------------------------------- quarantine
def test_quarantine_keeps_the_newest_entries(tmp_path):
    root = tmp_path / "checkpoints"
    for i in range(5):
        (root / f"{i}.orbax-checkpoint-tmp").mkdir(parents=True)
        (root / f"{i}.orbax-checkpoint-tmp" / "x").write_text("partial")
        ckpt_lib.Checkpointer(str(tmp_path), every=1).close()
    kept = sorted(os.listdir(tmp_path / ckpt_lib.QUARANTINE))
    assert len(kept) == ckpt_lib.QUARANTINE_KEEP == 3
    assert kept == ["2.orbax-checkpoint-tmp-0", "3.orbax-checkpoint-tmp-0", "4.orbax-checkpoint-tmp-0"]
