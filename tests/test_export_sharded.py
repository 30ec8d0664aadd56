"""Export from a checkpoint written by 8 (CPU) devices with the params sharded over a mesh: the exporter
restores parameters only, onto host numpy, in a 1-device process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
from test_export_helpers import ROOT, make_run, model_cfg, norm_stats

from vla_jax.export import to_torch
from vla_jax.export.package import export
from vla_jax.train.checkpoint import load_params

WRITER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    import jax, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from test_export_helpers import norm_stats, save_checkpoint, train_config
    from vla_jax.export.to_torch import unflatten_params

    assert jax.device_count() == 8, jax.devices()
    config = train_config("flow")
    params = unflatten_params(dict(np.load({params!r})))  # {{"params": ...}}
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("fsdp", "tensor"))

    def shard(x):  # largest axis divisible by 4 on fsdp, another divisible by 2 on tensor
        spec = [None] * x.ndim
        for axis in sorted(range(x.ndim), key=lambda a: -x.shape[a]):
            if spec.count("fsdp") == 0 and x.shape[axis] % 4 == 0:
                spec[axis] = "fsdp"
            elif spec.count("tensor") == 0 and x.shape[axis] % 2 == 0:
                spec[axis] = "tensor"
        return jax.device_put(x, NamedSharding(mesh, P(*spec)))

    sharded = jax.tree.map(shard, params)
    leaves = jax.tree.leaves(sharded)
    split = sum(1 for x in leaves if x.addressable_shards[0].data.size < x.size)
    save_checkpoint({workdir!r}, 3, sharded, None, config, norm_stats())
    print(json.dumps({{"split": split, "leaves": len(leaves)}}))
""")


def test_export_from_checkpoint_sharded_over_8_devices(tmp_path):
    workdir = str(tmp_path / "run8")
    os.makedirs(workdir)
    _, saved = make_run("flow")  # the well-scaled (model.init + noise) params of the flow run, resharded
    np.savez(tmp_path / "params.npz", **to_torch.flatten_params(saved["params"]))
    script = WRITER.format(tests=os.path.join(ROOT, "tests"), workdir=workdir, params=str(tmp_path / "params.npz"))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["split"] > info["leaves"] // 2  # most params really were split across devices

    import jax

    assert jax.device_count() == 1
    ck = load_params(workdir)
    assert ck.step == 3 and ck.norm_stats == norm_stats()
    expected = to_torch.flatten_params(saved["params"])
    got = to_torch.flatten_params(ck.params)
    assert sorted(got) == sorted(expected)
    assert all(isinstance(v, np.ndarray) and np.array_equal(v, expected[k]) for k, v in got.items())

    out = str(tmp_path / "export8")
    report = export(workdir, out, fmt="pytorch", log=lambda *a: None)
    assert report["parity"]["torch_f32"] <= 1e-4 and report["step"] == 3
    params, _, _ = to_torch.load_torch(out)
    assert all(np.array_equal(v, expected[k]) for k, v in to_torch.flatten_params(params).items())
    assert model_cfg("flow").decoder.depth == json.load(open(os.path.join(out, "config.json")))["decoder"]["depth"]
