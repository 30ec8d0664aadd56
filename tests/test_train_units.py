"""Trainer building blocks in-process (1 CPU device): mesh shapes, sharding fallbacks, optimizer
masks / freezing / accumulation / schedule, the step's non-finite guard, metric logging, checkpoint discovery
and config checks."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import PartitionSpec as P

from vla_jax.models.summary import param_shapes
from vla_jax.models.vla import make_config
from vla_jax.train import checkpoint as ckpt_lib
from vla_jax.train import metrics as metrics_lib
from vla_jax.train import optimizer as opt_lib
from vla_jax.train import sharding as sh
from vla_jax.train import step as step_lib
from vla_jax.train import testing
from vla_jax.train.state import TrainState


# ----------------------------------------------------------------------------- mesh
def test_mesh_shape_fills_minus_one_and_names_errors():
    assert sh.mesh_shape(dict(data=-1, fsdp=2, tensor=1), 8) == {"data": 4, "fsdp": 2, "tensor": 1}
    assert sh.mesh_shape(dict(fsdp=-1), 8) == {"data": 1, "fsdp": 8, "tensor": 1}
    with pytest.raises(sh.ShardingError, match="only one axis may be -1"):
        sh.mesh_shape(dict(data=-1, fsdp=-1), 8)
    with pytest.raises(sh.ShardingError, match="needs 6 devices but 8"):
        sh.mesh_shape(dict(data=3, fsdp=2, tensor=1), 8)
    with pytest.raises(sh.ShardingError, match="not divisible by 3"):
        sh.mesh_shape(dict(data=-1, fsdp=3), 8)
    with pytest.raises(sh.ShardingError, match="unknown axes"):
        sh.mesh_shape(dict(model=2), 2)
    with pytest.raises(sh.ShardingError, match="config.sharding='zero'"):
        sh.get_rules("zero")
    mesh = sh.make_mesh(dict(data=-1))
    assert mesh.axis_names == sh.MESH_AXES and mesh.devices.size == jax.device_count()


def test_indivisible_dims_are_replicated():
    class FakeMesh:
        shape = {"data": 2, "fsdp": 4, "tensor": 2}

    fit = sh._fit_spec(P("tensor", "fsdp"), (300, 32), FakeMesh())
    assert fit == P("tensor", "fsdp")
    assert sh._fit_spec(P("tensor", "fsdp"), (301, 30), FakeMesh()) == P(None, None)
    assert sh._fit_spec(P(("data", "fsdp")), (16,), FakeMesh()) == P(("data", "fsdp"))
    assert sh._fit_spec(P(("data", "fsdp")), (4,), FakeMesh()) == P(None)


# ----------------------------------------------------------------------------- optimizer
def _tiny_params():
    cfg = testing.tiny_config()
    import flax.linen as nn
    shapes = nn.unbox(param_shapes(make_config(cfg.model)))
    rng = np.random.default_rng(0)
    return cfg, jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes)


def test_weight_decay_mask_skips_norms_biases_embeddings():
    cfg, params = _tiny_params()
    mask = {opt_lib.param_name(p): m for p, m in jax.tree_util.tree_flatten_with_path(
        opt_lib.decay_mask(params, cfg.optimizer.decay_exclude))[0]}
    assert mask["img/blocks/qkv/w"] and mask["llm/layers/q_0/w"] and mask["img/embedding/w"]
    for name in ("llm/embedding", "img/pos_embedding", "img/blocks/ln_attn/scale", "img/blocks/ln_attn/bias",
                 "llm/layers/pre_attn_norm_0/scale", "img_proj/b", "llm/final_norm_1/scale"):
        assert not mask[name], name


def test_freeze_regex_leaves_params_untouched_and_clip_sees_only_trainable():
    cfg, params = _tiny_params()
    cfg.optimizer.freeze = (r"^img/", r"^llm/embedding$")
    cfg.optimizer.warmup_steps = 0
    cfg.optimizer.schedule = "constant"
    tx, _ = opt_lib.make_optimizer(cfg.optimizer, 10)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 100.0), params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
        name = opt_lib.param_name(path)
        frozen = name.startswith("img/") or name == "llm/embedding"
        assert (float(jnp.abs(u).max()) == 0.0) == frozen, name
    trainable, total = opt_lib.trainable_count(params, cfg.optimizer.freeze)
    assert 0 < trainable < total
    with pytest.raises(opt_lib.OptimizerError, match="config.optimizer.freeze"):
        cfg.optimizer.freeze = ("([",)
        opt_lib.make_optimizer(cfg.optimizer, 10)
    with pytest.raises(opt_lib.OptimizerError, match=r"config\.optimizer\.freeze=\(1,\) must be a tuple of regex"):
        cfg.optimizer.freeze = (1,)
        opt_lib.make_optimizer(cfg.optimizer, 10)


def test_grad_accumulation_equals_one_big_step():
    cfg = testing.tiny_config()
    rng = np.random.default_rng(1)
    params = {"params": {"dense": {"w": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
                                   "b": jnp.zeros(4)}, "norm": {"scale": jnp.ones(4)}}}
    cfg.optimizer.schedule, cfg.optimizer.warmup_steps = "constant", 0
    g1 = jax.tree.map(lambda p: jnp.sin(p), params)
    g2 = jax.tree.map(lambda p: jnp.cos(3 * p), params)
    tx1, _ = opt_lib.make_optimizer(cfg.optimizer, 10)
    u, _ = jax.jit(tx1.update)(jax.tree.map(lambda a, b: (a + b) / 2, g1, g2), tx1.init(params), params)
    expected = optax.apply_updates(params, u)
    cfg.optimizer.grad_accum_steps = 2
    tx2, _ = opt_lib.make_optimizer(cfg.optimizer, 20)
    s = jax.jit(tx2.init)(params)
    update = jax.jit(tx2.update)
    u1, s = update(g1, s, params)
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(u1)) == 0.0
    p1 = optax.apply_updates(params, u1)
    u2, s = update(g2, s, p1)
    got = optax.apply_updates(p1, u2)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_schedule_warmup_then_cosine():
    cfg = testing.tiny_config()
    o = cfg.optimizer
    o.lr, o.warmup_steps, o.end_lr_factor = 1.0, 10, 0.1
    sched = opt_lib.make_schedule(o, 110)
    assert float(sched(0)) == 0.0 and abs(float(sched(5)) - 0.5) < 1e-6 and abs(float(sched(10)) - 1.0) < 1e-6
    assert abs(float(sched(60)) - 0.55) < 1e-3 and abs(float(sched(110)) - 0.1) < 1e-6
    o.schedule = "linear"
    with pytest.raises(opt_lib.OptimizerError, match="config.optimizer.schedule"):
        opt_lib.make_schedule(o, 10)


# ----------------------------------------------------------------------------- non-finite guard
class _SqrtModel:
    """Stands in for VLA in ``make_train_step``: one ``flow`` term, ``sum(sqrt(w * x))`` per example; ``u`` is
    unused (its gradient is 0)."""

    def apply(self, params, batch, rng, method=None):
        del rng, method
        sums = jnp.sqrt(params["params"]["w"] * batch["x"]).sum(-1)
        return {"flow": (sums, jnp.ones_like(sums))}


def _guarded_step(x, w=1.0, eps=1e-8, ema=0.5):
    """One jitted step of :class:`_SqrtModel` (Adam, EMA decay 0.9): (old state, new state, host metrics)."""
    params = {"params": {"w": jnp.full((3,), w, jnp.float32), "u": jnp.ones((2,), jnp.float32)}}
    tx = optax.adam(0.1, eps=eps)
    state = TrainState(step=jnp.int32(0), params=params, opt_state=tx.init(params),
                                ema_params=jax.tree.map(lambda p: jnp.full_like(p, ema), params),
                                rng=jax.random.key_data(jax.random.key(0)))
    train_step = step_lib.make_train_step(_SqrtModel(), tx, optax.constant_schedule(0.1), loss_weights={},
                                          num_sources=1, ema_decay=0.9)
    batch = {"x": jnp.full((2, 3), x, jnp.float32), "source": jnp.zeros((2,), jnp.int32)}
    new, metrics = jax.jit(train_step)(state, batch)
    return state, new, jax.device_get(metrics)


@pytest.mark.parametrize("case,quantity", [
    (dict(x=1.0), None),
    (dict(x=float("nan")), "loss"),
    (dict(x=1.0, w=0.0), "gradient norm"),  # sqrt'(0) = inf; the loss is 0
    (dict(x=1.0, eps=0.0), "parameters"),  # Adam: 0 / 0 for the unused u
    (dict(x=1.0, ema=float("inf")), "EMA parameters"),
])
def test_guard_rejects_a_step_that_makes_any_guarded_quantity_nonfinite(case, quantity):
    old, new, metrics = _guarded_step(**case)
    assert step_lib.nonfinite_quantity(metrics) == quantity
    assert int(new.step) == 1
    for kept, before in ((new.params, old.params), (new.opt_state, old.opt_state), (new.ema_params, old.ema_params)):
        same = all(np.array_equal(a, b, equal_nan=True) for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(before)))
        assert same == (quantity is not None)
    if quantity not in (None, "EMA parameters"):  # a rejected step leaves finite params finite
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(new.params) + jax.tree.leaves(new.ema_params))


def test_all_finite_reduces_every_leaf():
    tree = {"a": jnp.ones((2, 3)), "b": [jnp.zeros(4), jnp.arange(3)]}
    assert bool(step_lib.all_finite(tree)) and bool(step_lib.all_finite(None))
    for bad in (np.nan, np.inf, -np.inf):
        assert not bool(jax.jit(step_lib.all_finite)({**tree, "c": jnp.array([1.0, bad])}))


# ----------------------------------------------------------------------------- metrics
def test_metrics_writer_drops_rows_after_resume_step(tmp_path):
    w = metrics_lib.MetricsWriter(str(tmp_path), enabled=True)
    for s in range(1, 7):
        w.write(s, {"loss": s * 1.0, "bad": float("nan")})
    w.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # a line cut by a crash
    w = metrics_lib.MetricsWriter(str(tmp_path), enabled=True, start_step=4)
    w.write(5, {"loss": 50.0})
    w.close()
    rows = metrics_lib.read_metrics(str(tmp_path))
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and rows[-1]["loss"] == 50.0 and rows[0]["bad"] == "nan"
    assert os.listdir(tmp_path / "tb")


def test_analytic_flops_close_to_compiled_order_of_magnitude():
    cfg = testing.tiny_config()
    from vla_jax.models.summary import count_by_component
    counts = count_by_component(param_shapes(make_config(cfg.model)))
    per_example = metrics_lib.analytic_flops_per_example(cfg.model, counts)
    tok = metrics_lib.tokens_per_example(cfg.model)
    assert tok == {"patches": 8, "prefix": 16, "suffix": 5, "total": 21}
    assert 6 * sum(counts.values()) * 5 < per_example < 6 * sum(counts.values()) * 100


# ----------------------------------------------------------------------------- checkpoints
def _save_dummy(ck, step, value, config):
    state = {"w": jnp.full((4, 3), value, jnp.float32), "step": jnp.int32(step)}
    ck.save(step, state, data_state={"next_index": step}, config=config, norm_stats={"a": np.arange(3)})


def test_incomplete_checkpoint_is_never_latest(tmp_path):
    config = {"model": {"max_action_dim": 6}}
    ck = ckpt_lib.Checkpointer(str(tmp_path), every=2, keep_last=5)
    _save_dummy(ck, 2, 2.0, config)
    _save_dummy(ck, 4, 4.0, config)
    ck.close()
    root = tmp_path / "checkpoints"
    shutil.copytree(root / "4", root / "6")           # a newer step whose write was cut short
    os.remove(root / "6" / "state" / "_METADATA")
    (root / "8.orbax-checkpoint-tmp-123" / "state").mkdir(parents=True)  # orbax's in-flight temp dir
    ck = ckpt_lib.Checkpointer(str(tmp_path), every=2, keep_last=5)
    assert ck.latest_step() == 4 and ck.all_steps() == [2, 4]
    assert not (root / "6").exists() and not (root / "8.orbax-checkpoint-tmp-123").exists()
    assert len(os.listdir(tmp_path / "checkpoints_invalid")) == 2  # both moved aside, nothing deleted
    target = {"w": jax.ShapeDtypeStruct((4, 3), jnp.float32, sharding=sh.replicated(sh.make_mesh({}))),
              "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=sh.replicated(sh.make_mesh({})))}
    state, data_state, stats = ck.restore(4, target, config)
    assert float(state["w"][0, 0]) == 4.0 and data_state == {"next_index": 4} and stats == {"a": [0, 1, 2]}
    _save_dummy(ck, 6, 6.0, config)  # the quarantined step number can be saved again
    ck.close()
    assert ckpt_lib.Checkpointer(str(tmp_path), every=2).latest_step() == 6


def test_save_writes_a_params_item_that_the_tools_read(tmp_path):
    """Every save writes a params-only item beside the full state; the tools read it, and read the state item of
    steps without one; the trainer refuses to resume a params-only step in one line."""
    params = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    ema = {"params": {"w": np.full((2, 3), 0.5, np.float32)}}
    state = {"step": jnp.int32(2), "params": params, "opt_state": {"mu": params}, "ema_params": ema,
             "rng": np.zeros(2, np.uint32)}
    config = {"model": {"max_action_dim": 6}}
    ck = ckpt_lib.Checkpointer(str(tmp_path), every=2)
    ck.save(2, state, data_state={"next_index": 2}, config=config, norm_stats={"a": [1.0]})
    ck.close()
    step_dir = tmp_path / "checkpoints" / "2"
    assert sorted(ocp.PyTreeCheckpointHandler().metadata(step_dir / "params").tree) == ["ema_params", "params"]
    loaded = ckpt_lib.load_params(str(tmp_path))
    assert loaded.step == 2 and loaded.config == config and loaded.norm_stats == {"a": [1.0]}
    assert np.array_equal(loaded.params["params"]["w"], params["params"]["w"])
    assert np.array_equal(ckpt_lib.load_params(str(tmp_path), ema=True).params["params"]["w"], ema["params"]["w"])

    shutil.rmtree(step_dir / "params")  # a step with the state item only, written before items had checksums
    (step_dir / ckpt_lib.MANIFEST).unlink()
    assert ckpt_lib.is_complete(step_dir) and ckpt_lib.available_steps(str(tmp_path)) == [2]
    assert np.array_equal(ckpt_lib.load_params(str(tmp_path), ema=True).params["params"]["w"], ema["params"]["w"])

    shutil.rmtree(step_dir / "state")  # no parameters left: not a checkpoint
    assert not ckpt_lib.is_complete(step_dir)

    run = tmp_path / "imported"
    ck = ckpt_lib.Checkpointer(str(run), every=1, async_save=False)
    ck.save_params(0, {"params": params}, config=config, norm_stats=None)
    ck.wait()
    assert ck.latest_step() == 0
    with pytest.raises(ckpt_lib.CheckpointError, match="holds parameters only") as e:
        ck.restore(0, {"w": jax.ShapeDtypeStruct((2, 3), jnp.float32)}, config)
    assert "\n" not in str(e.value) and f"config.init.from_checkpoint={run}" in str(e.value)
    ck.close()
    with pytest.raises(ckpt_lib.CheckpointError, match="has no EMA parameters"):
        ckpt_lib.load_params(str(run), ema=True)


def test_checkpoint_config_mismatch_is_one_line_naming_the_field(tmp_path):
    cfg = testing.tiny_config()
    ck = ckpt_lib.Checkpointer(str(tmp_path), every=1)
    _save_dummy(ck, 1, 1.0, cfg.to_dict())
    ck.wait()
    other = testing.tiny_config(model__max_action_dim=7, preset="small")
    with pytest.raises(ckpt_lib.CheckpointError) as e:
        ck.check_config(1, other.to_dict())
    msg = str(e.value)
    assert "\n" not in msg and "config.model.max_action_dim=6 (checkpoint) vs 7 (now)" in msg
    ck.check_config(1, testing.tiny_config(optimizer__lr=5.0).to_dict())  # training fields may change
    ck.close()
    saved = json.loads((tmp_path / "checkpoints" / "1" / "config" / "metadata").read_text())
    assert saved["model"]["max_action_dim"] == 6


def test_wandb_writer_logs_offline_and_a_resumed_run_continues_it(tmp_path, monkeypatch):
    """config.metrics.wandb in offline mode: the scalars land in the run file under <workdir>/wandb, and a
    second writer in the same workdir (a resumed run) continues the same W&B run id."""
    import wandb

    from vla_jax.train import wandb_writer

    monkeypatch.setenv("WANDB_SILENT", "true")
    settings = ml_collections.ConfigDict(dict(project="vla_jax_test", entity="", name="", mode="offline"))
    for start, values in ((0, (0.5, 0.25)), (2, (0.125,))):
        w = metrics_lib.MetricsWriter(str(tmp_path), enabled=True, start_step=start,
                                      wandb=wandb_writer.WandbWriter(str(tmp_path), settings, {"seed": 0}))
        for i, v in enumerate(values, start + 1):
            w.write(i, {"loss": v})
        w.close()
    run_id = (tmp_path / wandb_writer.RUN_ID_FILE).read_text().strip()
    files = sorted((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2  # one per start, both the same W&B run
    assert b"0.25" in files[0].read_bytes() and b"0.125" in files[1].read_bytes()
    assert [r["loss"] for r in metrics_lib.read_metrics(str(tmp_path))] == [0.5, 0.25, 0.125]
    wandb.teardown()  # stop this process's W&B service: trainers started later by other tests must not inherit it


def test_wandb_settings_errors_are_one_line():
    from vla_jax.train import wandb_writer

    off = ml_collections.ConfigDict(dict(project="", entity="", name="", mode="typo"))
    assert wandb_writer.settings_error(off) is None  # off: nothing is checked
    bad = ml_collections.ConfigDict(dict(project="p", entity="", name="", mode="ofline"))
    assert wandb_writer.settings_error(bad) == (
        "config.metrics.wandb.mode='ofline' is not one of online, offline, disabled")
