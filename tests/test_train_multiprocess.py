"""A real multi-process run: 2 processes x 4 CPU devices on localhost (gloo collectives, local
coordinator) started by launch/local.sh, against the same training in 1 process x 8 devices."""

import pathlib

import jax
import numpy as np
import pytest

from vla_jax.train import testing
from vla_jax.train.metrics import read_metrics

from test_train_resume import restore

RUN = {"num_steps": 3, "checkpoint.every": 3, "log_every": 1, "mesh.shape.data": 2, "mesh.shape.fsdp": 2,
       "mesh.shape.tensor": 2, "sharding": "fsdp_tp"}


@pytest.mark.slow  # ~75 s on 2 cores: three JAX processes compile the step
def test_two_processes_match_one_process(tmp_path):
    single = tmp_path / "single"
    proc = testing.run_train(single, RUN, devices=8)
    assert proc.returncode == 0, proc.stderr[-3000:]

    proc = testing.run_launcher(2, 4, lambda attempt: [f"--workdir={tmp_path / f'multi{attempt}'}",
                                                       *testing.flag_args(RUN)])
    multi = pathlib.Path(next(a for a in proc.args if a.startswith("--workdir=")).split("=", 1)[1])  # the run kept
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "processes: 2, devices: 8" in proc.stdout
    assert "[Gloo]" not in proc.stdout + proc.stderr  # the launcher drops gloo's per-connection lines

    a, b = read_metrics(single), read_metrics(multi)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        for key in ("loss", "loss/flow", "loss/text", "grad_norm"):
            assert abs(ra[key] - rb[key]) <= 1e-5 * abs(ra[key]), (ra["step"], key, ra[key], rb[key])

    # the checkpoint written jointly by both processes holds the same parameters (Adam turns
    # float-rounding-level gradient differences on near-zero entries into up to ~lr-sized steps)
    pa, pb = restore(single, 3).params, restore(multi, 3).params
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=5e-5)
