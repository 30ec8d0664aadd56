"""pi0.5 (``config.model.action_expert="pi05"``): parity with openpi's own outputs on
../shared/fixtures/openpi/pi05_dummy.npz, the full-size name map, exact round trips, the import tool, an 8-device
FSDP fine-tune from an imported checkpoint, and the one-line refusals around it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interop_fixtures import FIXTURES, ROOT, read_shape_list

from vla_jax.config import load_config
from vla_jax.interop import openpi
from vla_jax.models import vla
from vla_jax.train import testing

PI05 = os.path.join(FIXTURES, "pi05_dummy.npz")
PI0 = os.path.join(FIXTURES, "pi0_dummy.npz")
pytestmark = pytest.mark.skipif(not os.path.isfile(PI05), reason=f"{PI05} not available")


@pytest.fixture(scope="module")
def fixture():
    return openpi.Fixture.load(PI05)


def test_parity_with_openpi_outputs():
    """Prefix, suffix tokens, the adaptive norms' conditioning, velocity (joint pass and KV cache), per-step loss
    and 10-step sampled actions reproduce openpi's pi0.5 within 1e-5 (loss: 1e-4 relative)."""
    diffs = {d.name: d for d in openpi.check_fixture(PI05)}
    assert set(diffs) == {"prefix_tokens", "prefix_mask", "velocity", "velocity_cached", "suffix_tokens",
                          "suffix_ar_mask", "adarms_cond", "loss", "sampled"}
    for d in diffs.values():
        assert d.ok, d.format()


def test_state_reaches_the_model_only_through_the_prompt(fixture):
    """As in openpi: negating the state leaves every output bit-identical (no state token, no state_proj)."""
    config = fixture.config()
    assert config.model.action_expert == "pi05" and config.model.max_text_len == 200
    assert config.data.get("prompt_format", "pi05") == "pi05"
    model = vla.VLA(vla.make_config(config.model))
    variables = jax.tree.map(jnp.asarray, openpi.to_vla_jax(fixture.params))
    batch = fixture.batch()
    obs = {k: batch[k] for k in ("images", "image_mask", "tokens", "token_mask", "state", "state_mask",
                                 "action_dim_mask")}
    x = fixture.inputs
    run = jax.jit(lambda o: model.apply(variables, o, x["x_t"], x["t"], method=vla.VLA.full_velocity))
    assert np.array_equal(np.asarray(run(obs)), np.asarray(run({**obs, "state": -obs["state"]})))


def test_fixture_params_round_trip_exactly(fixture):
    ours = openpi.to_vla_jax(fixture.params)
    flat = openpi.flatten(ours["params"])
    assert "state_proj/w" not in flat and "llm/final_norm_1/scale" not in flat
    assert flat["llm/layers/pre_attn_norm_1/modulation/w"].shape == (4, 64, 192)
    back = openpi.flatten(openpi.to_openpi(ours))
    assert set(back) == set(fixture.params)
    for name, value in fixture.params.items():
        assert back[name].dtype == np.float32 and np.array_equal(back[name], value), name


def test_full_size_pi05_maps_one_to_one_onto_openpi_names():
    """eval_shape of the pi05 preset <-> openpi's full-size pi0.5 list: every name and shape, none left over."""
    want = read_shape_list(os.path.join(FIXTURES, "openpi_param_names_pi05.txt"))
    config = load_config(os.path.join(ROOT, "configs/pretrain.py") + ":size=pi05")
    abstract = openpi.abstract_variables(config.model)
    got = {k: (tuple(v.shape), str(v.dtype)) for k, v in openpi.flatten(jax.eval_shape(openpi.to_openpi, abstract)).items()}
    assert got == want
    assert sum(np.prod(s) for s, _ in want.values()) == 3_353_433_872
    structs = openpi.unflatten({k: jax.ShapeDtypeStruct(s, jnp.float32) for k, (s, _) in want.items()})
    openpi.check_against(jax.eval_shape(openpi.to_vla_jax, structs), abstract)


def test_adaptive_norms_start_as_identity_gates_closed():
    """A fresh pi05 model: every modulation Dense is zero, so each expert norm is a plain RMS and every gated
    residual adds nothing until training opens it (openpi's zero init)."""
    config = load_config(os.path.join(ROOT, "configs/pretrain.py") + ":size=pi05,mixture=synthetic",
                         {f"model.{k}": v for k, v in SIZES.items()})
    model = vla.VLA(vla.make_config(config.model))
    from vla_jax.models.summary import dummy_batch

    batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in dummy_batch(model.cfg, 1).items()}
    params = nn.unbox(jax.jit(lambda b: model.init(jax.random.key(0), b, jax.random.key(0),
                                                   method=vla.VLA.compute_loss))(batch))
    flat = openpi.flatten(params["params"])
    mods = [k for k in flat if "/modulation/" in k]
    assert len(mods) == 6 and all(not np.asarray(flat[k]).any() for k in mods)


def test_addons_that_change_the_state_token_are_refused_in_one_line():
    config = load_config(os.path.join(ROOT, "configs/pretrain.py") + ":size=pi05",
                         {"model.addons": ("prefix_readout",)})
    with pytest.raises(ValueError, match=r"^config.model.addons \['prefix_readout'\] change the suffix's state "
                                         r"token, which config.model.action_expert='pi05' does not have$"):
        vla.make_config(config.model)
    config = load_config(os.path.join(ROOT, "configs/pretrain.py") + ":size=pi05", {"model.action_head": "discrete"})
    with pytest.raises(ValueError, match=r"^config.model.action_expert='pi05' needs config.model.action_head='flow'$"):
        vla.make_config(config.model)


# ----------------------------------------------------------------------------------------- import and fine-tune
SIZES = {"vocab_size": 1024, "max_text_len": 48, "vit.width": 64, "vit.depth": 2, "vit.mlp_dim": 128,
         "vit.num_heads": 4, "llm.width": 64, "llm.depth": 4, "llm.mlp_dim": 128, "llm.num_heads": 8,
         "llm.num_kv_heads": 1, "llm.head_dim": 16, "expert.width": 64, "expert.mlp_dim": 128}


def _openpi_checkpoint(path: str, params: dict) -> str:
    import orbax.checkpoint as ocp

    ckpt = os.path.join(path, "openpi_ckpt")
    ocp.PyTreeCheckpointer().save(os.path.join(ckpt, "params"), {"params": openpi.unflatten(params)})
    rng = np.random.default_rng(0)
    block = lambda n: {"mean": rng.normal(size=n).tolist(), "std": rng.uniform(0.5, 1, n).tolist(),  # noqa: E731
                       "q01": (-rng.uniform(1, 2, n)).tolist(), "q99": rng.uniform(1, 2, n).tolist()}
    os.makedirs(os.path.join(ckpt, "assets", "droid"))
    with open(os.path.join(ckpt, "assets", "droid", "norm_stats.json"), "w") as f:
        json.dump({"norm_stats": {"state": block(8), "actions": block(8)}}, f)
    return ckpt


def _import(ckpt: str, out: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools/import_openpi.py"), f"--checkpoint={ckpt}",
                           f"--out={out}", "--dtype=float32"], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=testing.env())


@pytest.fixture(scope="module")
def imported(tmp_path_factory, fixture):
    tmp = tmp_path_factory.mktemp("pi05_import")
    out = str(tmp / "run")
    proc = _import(_openpi_checkpoint(str(tmp), fixture.params), out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout


def test_import_chooses_the_pi05_preset(imported, fixture):
    from vla_jax.train.checkpoint import load_params

    out, report = imported
    assert "47 vla_jax parameters from 51 openpi arrays" in report and "none left over" in report
    assert "llm/final_norm_1/modulation/w  <-  PaliGemma/llm/final_norm_1/Dense_0/kernel" in report
    ck = load_params(out)
    assert "dataset 'droid' (state 8-D, action 8-D, bounds_q99)" in report  # openpi's pi0.5: quantile norm
    assert ck.norm_stats["droid"]["action_normalization"] == ck.norm_stats["droid"]["state_normalization"] == \
        "bounds_q99"
    assert ck.config["preset"] == "pi05" and ck.config["model"]["action_expert"] == "pi05"
    assert ck.config["data"]["prompt_format"] == "pi05"
    want = openpi.flatten(openpi.to_vla_jax(fixture.params)["params"])
    got = openpi.flatten(ck.params["params"])
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)


def _train(workdir: str, init: str, devices: int, steps: int, extra: dict | None = None):
    flags = {**{f"model.{k}": v for k, v in SIZES.items()}, "model.dtype": "float32", "model.remat": "none",
             "model.num_cameras": 1, "model.action_horizon": 10, "model.max_text_len": 16, "batch_size": 8, "num_steps": steps, "log_every": 1,
             "checkpoint.every": steps, "optimizer.lr": 1e-3, "optimizer.warmup_steps": 2,
             "optimizer.ema_decay": 0.0, "init.from_checkpoint": init, "metrics.peak_flops_per_device": 1e11,
             "mesh.shape.data": 1, "mesh.shape.fsdp": -1, **(extra or {})}
    cmd = [sys.executable, "-m", "vla_jax.train", f"--workdir={workdir}",
           "--config=configs/pretrain.py:size=pi05,mixture=synthetic"] + [f"--config.{k}={v}" for k, v in flags.items()]
    return subprocess.run(cmd, cwd=ROOT, env=testing.env(devices), capture_output=True, text=True, timeout=900)


def test_openpi_export_gives_back_the_imported_pi05_checkpoint(imported, fixture, tmp_path):
    import orbax.checkpoint as ocp
    from etils import epath

    run, _ = imported
    out = tmp_path / "back"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools/export.py"), f"--workdir={run}", f"--out={out}",
                           "--format=openpi"], capture_output=True, text=True, timeout=600, cwd=ROOT, env=testing.env())
    assert proc.returncode == 0, proc.stderr
    handler = ocp.PyTreeCheckpointHandler()
    tree = handler.metadata(epath.Path(out / "params")).tree
    target = {"params": jax.tree.map(lambda _: 0, tree["params"])}
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    got = openpi.flatten(handler.restore(epath.Path(out / "params"),
                                         args=ocp.args.PyTreeRestore(item=target, restore_args=args))["params"])
    handler.close()
    assert set(got) == set(fixture.params)
    assert all(got[k].tobytes() == v.tobytes() for k, v in fixture.params.items())
    with open(out / "assets" / "droid" / "norm_stats.json") as f:
        assert set(json.load(f)["norm_stats"]) == {"state", "actions"}


@pytest.mark.slow
def test_fsdp_fine_tune_from_the_imported_checkpoint_lowers_the_loss(imported, tmp_path):
    """20 steps on 8 CPU devices, parameters sharded over fsdp=8, starting from the imported openpi weights (one
    camera, 10-step chunks: neither is in the weights)."""
    from vla_jax.train.metrics import read_metrics

    run, _ = imported
    proc = _train(str(tmp_path / "ft"), run, devices=8, steps=20)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "ft" / "init_report.txt") as f:
        assert "0 shape-mismatched" in f.read()
    rows = read_metrics(str(tmp_path / "ft"))
    losses = [r["loss/flow"] for r in rows if "loss/flow" in r]  # the text loss of random synthetic tokens stays
    assert len(losses) == 20 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:3]), losses  # measured: 2.40 -> 1.99


def test_pi0_weights_into_the_pi05_preset_are_refused_in_one_line(tmp_path):
    pi0 = openpi.Fixture.load(PI0)
    run = str(tmp_path / "pi0_run")
    proc = _import(_openpi_checkpoint(str(tmp_path), pi0.params), run)
    assert proc.returncode == 0, proc.stderr
    proc = _train(str(tmp_path / "ft"), run, devices=1, steps=1)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "holds pi0 weights but this run's config.model.action_expert='pi05'" in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
