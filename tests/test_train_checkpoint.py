"""Checkpoints across meshes and host memory across many saves (subprocesses with CPU devices)."""

import json

import numpy as np

from vla_jax.train import testing

SAVE_FSDP8 = r"""
import jax, numpy as np, sys
from vla_jax.models.vla import VLA, make_config
from vla_jax.train import checkpoint as ckpt_lib, sharding as sh, state as st, testing
from vla_jax.train.optimizer import make_optimizer
workdir = sys.argv[1]
cfg = testing.tiny_config()
model = VLA(make_config(cfg.model))
tx, _ = make_optimizer(cfg.optimizer, cfg.num_steps)
mesh = sh.make_mesh(dict(data=1, fsdp=8))
state, shardings = st.create_train_state(model, tx, mesh, sh.get_rules("fsdp"), 0, True)
# make the optimizer moments non-trivial so their restore is checked too
state = state.replace(opt_state=jax.tree.map(lambda x: x + 0.5 if x.dtype == np.float32 else x, state.opt_state),
                      step=state.step + 7)
q = state.params["params"]["llm"]["layers"]["q_0"]["w"]
assert q.sharding.spec[1] == "fsdp" and q.addressable_shards[0].data.shape[1] == q.shape[1] // 8
ck = ckpt_lib.Checkpointer(workdir, every=1)
ck.save(7, state, data_state={"next_index": 7}, config=cfg.to_dict(), norm_stats={})
ck.close()
flat = {sh.path_str(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(state)[0]}
np.savez(workdir + "/expected.npz", **flat)
print("SAVED")
"""

RESTORE_DP2 = r"""
import jax, numpy as np, sys, json
from vla_jax.models.vla import VLA, make_config
from vla_jax.train import checkpoint as ckpt_lib, sharding as sh, state as st, testing
from vla_jax.train.optimizer import make_optimizer
workdir = sys.argv[1]
assert jax.device_count() == 2
cfg = testing.tiny_config()
model = VLA(make_config(cfg.model))
tx, _ = make_optimizer(cfg.optimizer, cfg.num_steps)
expected = np.load(workdir + "/expected.npz")
out = {}
for name, shape, rules in [("dp2", dict(data=2), "dp"), ("fsdp2", dict(fsdp=2), "fsdp")]:
    mesh = sh.make_mesh(shape)
    abstract, shardings = st.state_shardings(model, tx, mesh, sh.get_rules(rules), 0, True)
    ck = ckpt_lib.Checkpointer(workdir, every=1)
    step = ck.latest_step()
    state, data_state, _ = ck.restore(step, st.with_shardings(abstract, shardings), cfg.to_dict())
    ck.close()
    flat = {sh.path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(state)[0]}
    assert set(flat) == set(expected.files), set(flat) ^ set(expected.files)
    mismatched = [k for k in flat if not np.array_equal(np.asarray(flat[k]), expected[k])]
    q = state.params["params"]["llm"]["layers"]["q_0"]["w"]
    out[name] = dict(step=step, data_state=data_state, mismatched=mismatched, n=len(flat),
                     q_spec=[a for a in q.sharding.spec], q_shard=list(q.addressable_shards[0].data.shape),
                     q_devices=len(q.sharding.device_set))
print("RESULT" + json.dumps(out))
"""


def test_restore_fsdp8_checkpoint_on_two_devices(tmp_path):
    proc = testing.run_python(SAVE_FSDP8.replace("sys.argv[1]", repr(str(tmp_path))), devices=8)
    assert proc.returncode == 0 and "SAVED" in proc.stdout, proc.stderr[-3000:]
    proc = testing.run_python(RESTORE_DP2.replace("sys.argv[1]", repr(str(tmp_path))), devices=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    for name in ("dp2", "fsdp2"):
        r = out[name]
        assert r["step"] == 7 and r["data_state"] == {"next_index": 7} and r["n"] > 100
        assert r["mismatched"] == [], r["mismatched"][:5]
        assert r["q_devices"] == 2
    assert all(a is None for a in out["dp2"]["q_spec"]) and out["dp2"]["q_shard"] == [2, 32, 2, 16]
    assert out["fsdp2"]["q_spec"][1] == "fsdp" and out["fsdp2"]["q_shard"] == [2, 16, 2, 16]


RSS_SCRIPT = r"""
import gc, json, sys, jax, jax.numpy as jnp, psutil
from vla_jax.train import checkpoint as ckpt_lib
workdir = sys.argv[1]
# ~64 MiB of float32 "parameters" in 8 arrays
state = {"params": {f"w{i}": jnp.full((2048, 1024), float(i), jnp.float32) for i in range(8)},
         "step": jnp.int32(0)}
bump = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s))
ck = ckpt_lib.Checkpointer(workdir, every=1, keep_last=2, keep_every=0, async_save=True)
proc = psutil.Process()
rss = []
for step in range(1, 21):
    state = bump(state)
    ck.save(step, state, data_state={"next_index": step}, config={"model": {}}, norm_stats={"x": [1.0]})
    ck.wait()
    gc.collect()
    rss.append(proc.memory_info().rss / 2**20)
ck.close()
print("RESULT" + json.dumps(dict(rss=rss, steps=ck.all_steps())))
"""


def test_host_rss_stays_flat_across_20_saves(tmp_path):
    proc = testing.run_python(RSS_SCRIPT.replace("sys.argv[1]", repr(str(tmp_path))), devices=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    rss = np.asarray(out["rss"])
    assert out["steps"] == [19, 20]
    # One leaked copy of the state would add 64 MiB per save (1.3 GiB over 20). What remains is
    # allocator noise: RSS oscillates within a few tens of MiB once orbax's buffers are warm.
    later = rss[5:]
    slope = np.polyfit(np.arange(len(later)), later, 1)[0]
    assert slope < 4.0, f"RSS grows {slope:.1f} MiB/save: {rss.round(0).tolist()}"
    growth = later.max() - np.median(rss[5:10])
    assert growth < 64, f"RSS grew {growth:.0f} MiB: {rss.round(0).tolist()}"
