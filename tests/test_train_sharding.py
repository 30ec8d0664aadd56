"""One step's loss and gradients are the same on every mesh, and parameters are laid out as the
rules say. Runs in a subprocess with 8 CPU devices."""

import json

from vla_jax.train import testing

SCRIPT = r"""
import json, jax, numpy as np, flax.linen as nn
from jax.sharding import PartitionSpec as P
from vla_jax.models.summary import param_shapes
from vla_jax.models.vla import VLA, make_config
from vla_jax.train import sharding as sh, state as st, step as sl, testing
from vla_jax.train.optimizer import make_optimizer
from vla_jax.train.synthetic import make_synthetic_iterator

assert jax.device_count() == 8
cfg = testing.tiny_config()
model = VLA(make_config(cfg.model))
tx, _ = make_optimizer(cfg.optimizer, cfg.num_steps)
batch_np = next(make_synthetic_iterator(cfg))
loss_fn = sl.make_loss_fn(model, dict(cfg.loss_weights), 3)
rng = jax.random.key(3)
init = jax.jit(st.make_init_fn(model, tx, 0, False))
params_np = jax.device_get(init().params)   # initialised once, then placed on each mesh

def spec(x):  # PartitionSpec -> JSON, padded with None to the array's rank
    s = list(x.sharding.spec) + [None] * (x.ndim - len(x.sharding.spec))
    return [list(a) if isinstance(a, tuple) else a for a in s]

out = {}
for name, shape, rules_name, devices in [
        ("single", dict(data=1), "fsdp", jax.devices()[:1]),
        ("data8", dict(data=8), "fsdp", None),
        ("fsdp8", dict(data=1, fsdp=8), "fsdp", None),
        ("2x2x2", dict(data=2, fsdp=2, tensor=2), "fsdp_tp", None)]:
    mesh = sh.make_mesh(shape, devices)
    rules = sh.get_rules(rules_name)
    _, shardings = st.state_shardings(model, tx, mesh, rules, 0, False)
    params = jax.device_put(params_np, shardings.params)
    bsh = sh.batch_sharding(mesh)
    batch = sh.global_batch(batch_np, bsh)
    rep = sh.replicated(mesh)
    fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), out_shardings=((rep, rep), shardings.params))
    with sl.sharding_context(mesh, rules):
        (loss, aux), grads = fn(params, batch, rng)
    flat = {sh.path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(grads)[0]}
    pflat = {sh.path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    out[name] = dict(
        loss=float(loss), flow=float(aux["loss/flow"]), text=float(aux["loss/text"]),
        grads={k: np.asarray(v).ravel().tolist() for k, v in flat.items()},
        specs={k: spec(v) for k, v in pflat.items()},
        grad_specs={k: spec(v) for k, v in flat.items()},
        shard_shape={k: list(v.addressable_shards[0].data.shape) for k, v in pflat.items()},
        batch_spec=spec(batch["images"]),
    )
print("RESULT" + json.dumps(out))
"""


def _rel(a, b):
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def test_loss_and_grads_match_single_device_on_every_mesh():
    proc = testing.run_python(SCRIPT, devices=8, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    ref = out["single"]
    for name in ("data8", "fsdp8", "2x2x2"):
        got = out[name]
        for key in ("loss", "flow", "text"):
            assert abs(got[key] - ref[key]) <= 1e-5 * abs(ref[key]), (name, key, got[key], ref[key])
        for param, g in ref["grads"].items():
            assert _rel(got["grads"][param], g) <= 1e-5, (name, param, _rel(got["grads"][param], g))

    # data parallel: parameters replicated, batch split 8 ways over (data, fsdp)
    assert all(a is None for s in out["data8"]["specs"].values() for a in s)
    assert out["data8"]["batch_spec"][0] == ["data", "fsdp"]
    # FSDP: the embed dimension of each kernel is split over fsdp; each device holds 1/8
    f = out["fsdp8"]
    assert f["specs"]["params/llm/layers/q_0/w"] == [None, "fsdp", None, None]
    assert f["shard_shape"]["params/llm/layers/q_0/w"] == [2, 4, 2, 16]
    assert f["specs"]["params/llm/embedding"] == [None, "fsdp"]
    assert f["specs"]["params/img/blocks/ln_attn/scale"] == [None, None]
    assert f["grad_specs"]["params/llm/layers/q_0/w"] == f["specs"]["params/llm/layers/q_0/w"]
    # FSDP + tensor parallel: heads / mlp / vocab over tensor; a single KV head stays whole
    t = out["2x2x2"]
    assert t["specs"]["params/llm/layers/q_0/w"] == [None, "fsdp", "tensor", None]
    assert t["specs"]["params/llm/layers/gating_0/w"] == [None, None, "fsdp", "tensor"]
    assert t["specs"]["params/llm/layers/mlp_out_0/w"] == [None, "tensor", "fsdp"]
    assert t["specs"]["params/llm/layers/kv_0/w"] == [None, None, "fsdp", None, None]
    assert t["specs"]["params/llm/embedding"] == ["tensor", "fsdp"]
    assert t["shard_shape"]["params/llm/layers/q_0/w"] == [2, 16, 1, 16]
    assert t["batch_spec"][0] == ["data", "fsdp"]
