"""Checkpoint export: JAX vs PyTorch vs onnxruntime parity, the JAX-free PyTorch module, the exact round
trip, import back into a trainer checkpoint, the one-line errors of tools/export.py, and the refusal of
non-finite parameters and actions."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
import torch
from test_export_helpers import (DATASET, ROOT, STEPS, exported, make_run, model_cfg, norm_stats, save_checkpoint,
                                 tmp_root, train_config)

from vla_jax.export import parity, to_onnx, to_torch
from vla_jax.export import torch_port as tp
from vla_jax.export.package import ExportError, export, import_torch
from vla_jax.train.checkpoint import load_params, write_checkpoint

TOL = 1e-4


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flat_equal(a, b):
    fa, fb = to_torch.flatten_params(a), to_torch.flatten_params(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        assert fa[k].dtype == fb[k].dtype and np.array_equal(fa[k], fb[k]), k


# ----------------------------------------------------------------------------------------- parity
def test_spatial_softmax_matches_jax():
    from vla_jax.export.torch_port.addons.keypoints import spatial_softmax as torch_spatial_softmax
    from vla_jax.models.addons.keypoints import spatial_softmax

    heat = np.random.default_rng(0).normal(0.0, 3.0, (2, 6, 10, 5)).astype(np.float32)  # [N, H, W, K]
    want = np.asarray(spatial_softmax(heat))
    got = torch_spatial_softmax(torch.from_numpy(heat).permute(0, 3, 1, 2)).numpy()  # torch: [N, K, H, W]
    np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("head", ["flow", "discrete"])
def test_parity_jax_torch_onnx(head):
    folder, report = exported(head)
    _, saved = make_run(head)
    cfg = model_cfg(head)
    for name in ("config.json", "model.safetensors", "policy.onnx", "torch_port/__init__.py", "norm_stats.json",
                 "tokenizer.model", "README.md"):
        assert os.path.isfile(os.path.join(folder, name)), name
    # the exporter's own check ran on a tokenized instruction and passed
    assert report["parity"]["tokenizer"] and report["step"] == STEPS[-1]
    assert report["parity"]["torch_f32"] <= TOL and report["parity"]["onnx_f32"] <= TOL

    policy = tp.VLAPolicy.from_pretrained(folder)
    session = to_onnx.onnx_session(os.path.join(folder, "policy.onnx"))
    params = saved["params"]
    worst = {"torch": 0.0, "onnx": 0.0}
    for seed in (21, 22):
        for batch in (1, 3):
            inputs = parity.make_inputs(cfg, batch, seed)  # fresh random inputs, random token ids
            ref = parity.jax_actions(cfg, params, inputs)
            assert ref.shape == (batch, cfg.action_horizon, cfg.max_action_dim)
            dims = inputs["action_dim_mask"][:, None, :]
            assert np.all(ref[~np.broadcast_to(dims, ref.shape)] == 0) and np.abs(ref).max() > 0.1
            if head == "discrete":  # greedy tokens vary, and the prefix logits agree
                assert np.unique(ref).size > 5
                jl = parity.jax_prefix_logits(cfg, params, inputs)
                state = np.where(inputs["state_mask"], inputs["state"], 0).astype(np.float32)
                args = [torch.from_numpy(inputs[k]) for k in parity.OBS_KEYS[:4]] + [torch.from_numpy(state)]
                tl = policy.encode_prefix(*args).last_logits.numpy()
                # large random weights amplify float32 rounding: both frameworks sit ~1e-4 relative from a
                # float64 run of the PyTorch module; a wrong weight or mask gives O(1) differences
                assert np.abs(jl - tl).max() <= 5e-4 * np.abs(jl).max(), np.abs(jl - tl).max()
            worst["torch"] = max(worst["torch"], np.abs(parity.torch_actions(policy, inputs) - ref).max())
            worst["onnx"] = max(worst["onnx"], np.abs(parity.onnx_actions(session, inputs) - ref).max())
    print(f"{head}: max abs diff vs JAX {worst}")
    assert worst["torch"] <= TOL and worst["onnx"] <= TOL, worst


def test_flow_num_steps_and_kv_cache():
    """num_steps is honoured, and the KV-cached PyTorch sampler matches JAX's naive re-encoding sampler."""
    import jax

    from vla_jax.models import vla

    folder, _ = exported("flow")
    _, saved = make_run("flow")
    cfg = model_cfg("flow")
    policy = tp.VLAPolicy.from_pretrained(folder)
    inputs = parity.make_inputs(cfg, 2, seed=3)
    obs = {k: inputs[k] for k in parity.OBS_KEYS}
    naive = np.asarray(jax.jit(lambda p, o, n: vla.sample_actions_naive(vla.VLA(cfg), p, o, n, 4))(
        saved["params"], obs, inputs["noise"]))
    four = parity.torch_actions(policy, inputs, num_steps=4)
    assert np.abs(four - naive).max() <= TOL
    assert np.abs(four - parity.torch_actions(policy, inputs, num_steps=10)).max() > 1e-3


def test_keypoint_parity_with_large_random_weights():
    """The instruction-conditioned keypoints start at zero; with random weights they change the actions a lot,
    and PyTorch still matches JAX."""
    import flax

    from vla_jax.models import addons

    folder, _ = exported("flow")
    _, saved = make_run("flow")
    cfg = model_cfg("flow")
    assert addons.has(cfg, "keypoints")
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(saved["params"]), sep="/")
    rng = np.random.default_rng(0)
    for key in [k for k in flat if k.startswith("params/keypoints/")]:
        flat[key] = rng.normal(0.0, 0.5, np.shape(flat[key])).astype(np.float32)
    params = flax.traverse_util.unflatten_dict(flat, sep="/")
    policy = tp.VLAPolicy.from_pretrained(folder)
    tensors = to_torch.jax_to_torch(params, cfg)
    policy.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()})
    inputs = parity.make_inputs(cfg, 3, seed=8)
    ref = parity.jax_actions(cfg, params, inputs)
    assert np.abs(ref - parity.jax_actions(cfg, saved["params"], inputs)).max() > 0.1
    assert np.abs(parity.torch_actions(policy, inputs) - ref).max() <= TOL


# ----------------------------------------------------------------------------------------- no JAX
BLOCKER = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax", "ml_collections"):
                raise ImportError(f"{name} is blocked in this test")
    sys.meta_path.insert(0, Block())
""")


def test_torch_policy_runs_without_jax(tmp_path):
    from vla_jax.data.specs import get_spec
    from vla_jax.data.norm_stats import Normalizer

    folder, _ = exported("flow")
    _, saved = make_run("flow")
    cfg = model_cfg("flow")
    inputs = parity.make_inputs(cfg, 2, seed=5)
    ref = parity.jax_actions(cfg, saved["params"], inputs)
    spec, st = get_spec(DATASET), norm_stats()[DATASET]
    raw_ref = Normalizer(st["action"], spec.action_normalization, spec.normalize_mask("action")).inverse(ref[..., :7])
    state_ref = Normalizer(st["state"], spec.state_normalization, spec.normalize_mask("state"))(inputs["state"][:, :8])
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = BLOCKER + textwrap.dedent(f"""
        import json, sys, numpy as np
        try:
            import jax
            raise SystemExit("jax importable")
        except ImportError:
            pass
        sys.path.insert(0, {folder!r})          # the folder alone: its own torch_port package
        from torch_port import VLAPolicy
        policy = VLAPolicy.from_pretrained({folder!r})
        x = dict(np.load({str(tmp_path / 'inputs.npz')!r}))
        obs = {{k: x[k] for k in {parity.OBS_KEYS!r}}}
        a = policy.sample_actions(**obs, noise=x["noise"]).numpy()
        raw = policy.sample_actions(**obs, noise=x["noise"], dataset={DATASET!r}).numpy()
        state, mask = policy.normalize_state(x["state"][:, :8], {DATASET!r})
        sys.path.insert(0, {ROOT!r})            # and the package module, also without JAX
        from vla_jax.export.torch_port import VLAPolicy as PackagePolicy
        b = PackagePolicy.from_pretrained({folder!r}).sample_actions(**obs, noise=x["noise"]).numpy()
        banned = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "flax", "orbax"))
        np.savez({str(tmp_path / 'out.npz')!r}, a=a, b=b, raw=raw, state=state, mask=mask)
        print(json.dumps({{"banned": banned, "datasets": policy.datasets}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(tmp_path), env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"banned": [], "datasets": [DATASET]}
    out = np.load(tmp_path / "out.npz")
    assert np.abs(out["a"] - ref).max() <= TOL and np.array_equal(out["a"], out["b"])
    assert out["raw"].shape == (2, cfg.action_horizon, 7)
    np.testing.assert_allclose(out["raw"], raw_ref, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["state"][:, :8], state_ref, rtol=1e-5, atol=1e-5)
    assert out["mask"][:, :8].all() and not out["mask"][:, 8:].any()


# ----------------------------------------------------------------------------------------- round trip
def test_round_trip_and_import_for_init_from_checkpoint():
    folder, _ = exported("flow")
    _, saved = make_run("flow")
    params, cfg, _ = to_torch.load_torch(folder)
    flat_equal(params, saved["params"])

    run = os.path.join(tmp_root(), "imported")
    tool = load_tool("import_torch")
    assert tool.main([f"--folder={folder}", f"--out={run}"]) == 0
    ck = load_params(run)
    assert ck.step == 0 and ck.norm_stats[DATASET]["action_normalization"] == "bounds_q99"
    flat_equal(ck.params, saved["params"])
    flat_equal(load_params(run, ema=True).params, saved["params"])

    # a params-only checkpoint (no optimizer state) that a new run starts from with config.init.from_checkpoint
    import flax.linen as nn
    import orbax.checkpoint as ocp
    from etils import epath

    from vla_jax.models import summary
    from vla_jax.train import init_from

    step_dir = os.path.join(run, "checkpoints", "0")
    assert sorted(n for n in os.listdir(step_dir) if not n.startswith(("_", "commit"))) == \
        ["checksums.json", "config", "norm_stats", "params"]
    tree = ocp.PyTreeCheckpointHandler().metadata(epath.Path(step_dir).absolute() / "params").tree
    assert sorted(tree) == ["ema_params", "params"]  # no opt_state, step or rng
    overrides, report = init_from.load_checkpoint(run, nn.unbox(summary.param_shapes(cfg)))
    assert not report.fresh and not report.mismatched and not report.unused and report.loaded
    flat_equal(to_torch.unflatten_params({k[len("params/"):]: v for k, v in overrides.items()}), saved["params"])


def test_unscanned_layout_round_trip():
    """scan_layers=False params (layer_<i>/block_<i>) map to the same PyTorch names and back exactly."""
    from test_export_helpers import shaped_params

    config = train_config("flow", **{"model.scan_layers": False})
    params = shaped_params(config, seed=3)
    cfg = model_cfg("flow")
    from vla_jax.models.vla import make_config

    cfg_unscanned = make_config(config.model)
    assert "layer_0" in params["params"]["llm"] and "block_1" in params["params"]["img"]
    tensors = to_torch.jax_to_torch(params, cfg_unscanned)
    flat_equal(to_torch.torch_to_jax(tensors, cfg_unscanned), params)
    scanned = to_torch.torch_to_jax(tensors, cfg)  # same weights in the scanned layout
    assert scanned["params"]["llm"]["layers"]["q_1"]["w"].shape[0] == cfg.decoder.depth
    np.testing.assert_array_equal(scanned["params"]["llm"]["layers"]["q_1"]["w"][1],
                                  params["params"]["llm"]["layer_1"]["q_1"]["w"])


# ----------------------------------------------------------------------------------------- CLI
def test_cli_ema_step_bfloat16(tmp_path):
    import torch
    from safetensors.torch import load_file

    workdir, saved = make_run("flow")
    out = tmp_path / "bf16"
    rc = load_tool("export").main([f"--workdir={workdir}", f"--out={out}", f"--step={STEPS[0]}", "--ema",
                                   "--format=pytorch", "--dtype=bfloat16"])
    assert rc == 0
    assert not (out / "policy.onnx").exists()
    sd = load_file(str(out / "model.safetensors"))
    assert sd["llm.embedding.weight"].dtype == torch.bfloat16
    want = torch.from_numpy(saved["ema_params"]["params"]["llm"]["embedding"]).to(torch.bfloat16)
    assert torch.equal(sd["llm.embedding.weight"], want)  # the EMA params of the requested step
    config = json.load(open(out / "config.json"))
    par = config["export"]["parity"]
    assert config["export"]["step"] == STEPS[0] and config["export"]["ema"] and config["torch_dtype"] == "bfloat16"
    assert par["torch_f32"] <= TOL and 0 < par["torch_bf16_vs_jax_bf16"] < 0.5 and 0 < par["torch_bf16_vs_jax_f32"] < 0.5
    print("bf16 parity:", {k: v for k, v in par.items() if "bf16" in k})
    card = (out / "README.md").read_text()
    assert "PyTorch bfloat16 vs JAX float32" in card and f"| {STEPS[0]} of" in card
    policy = tp.VLAPolicy.from_pretrained(str(out))
    assert policy.compute_dtype == torch.bfloat16
    assert tp.VLAPolicy.from_pretrained(str(out), dtype=torch.float32).llm.embedding.weight.dtype == torch.float32


def test_cli_reads_params_item_and_state_only_steps_without_orbax_warnings(tmp_path):
    """tools/export.py reads a trainer step (params item beside the state) and a step with the state item only
    (make_run's layout); stderr carries no orbax warning about step metadata."""
    from vla_jax.train.checkpoint import Checkpointer

    old, saved = make_run("flow")
    new = tmp_path / "run"
    state = {"step": np.int32(STEPS[-1]), **saved, "opt_state": {"mu": saved["params"]}, "rng": np.zeros(2, np.uint32)}
    checkpointer = Checkpointer(str(new), every=1, async_save=False)
    checkpointer.save(STEPS[-1], state, data_state=None, config=train_config("flow").to_dict(), norm_stats=norm_stats())
    checkpointer.close()
    assert (new / "checkpoints" / str(STEPS[-1]) / "params" / "_METADATA").exists()
    assert not os.path.exists(os.path.join(old, "checkpoints", str(STEPS[-1]), "params"))
    for name, workdir in (("new", new), ("old", old)):
        proc = subprocess.run([sys.executable, "tools/export.py", f"--workdir={workdir}", f"--out={tmp_path / name}",
                               "--format=pytorch"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, JAX_PLATFORMS="cpu"))
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Metadata file does not exist" not in proc.stderr and "absl" not in proc.stderr, proc.stderr[-2000:]
        params, _, _ = to_torch.load_torch(str(tmp_path / name))
        flat_equal(params, saved["params"])


def run_cli(capsys, argv):
    rc = load_tool("export").main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


def assert_one_line(rc, err, *needles):
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, err


def test_error_no_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc, err = run_cli(capsys, [f"--workdir={tmp_path / 'empty'}", f"--out={tmp_path / 'o'}"])
    assert_one_line(rc, err, "no checkpoint in")
    assert not (tmp_path / "o").exists()


def test_error_missing_step(tmp_path, capsys):
    workdir, _ = make_run("flow")
    rc, err = run_cli(capsys, [f"--workdir={workdir}", "--step=7", f"--out={tmp_path / 'o'}"])
    assert_one_line(rc, err, "step 7 does not exist", "available steps: 5, 10")


def test_error_unsupported_preset(tmp_path, capsys):
    workdir, _ = make_run("flow")
    bad = tmp_path / "bad_run"
    shutil.copytree(workdir, bad)
    meta = bad / "checkpoints" / str(STEPS[-1]) / "config" / "metadata"
    config = json.loads(meta.read_text())
    config["model"]["llm"]["attn_logit_softcap"] = 50.0
    meta.write_text(json.dumps(config))
    rc, err = run_cli(capsys, [f"--workdir={bad}", f"--out={tmp_path / 'o'}", "--format=pytorch"])
    assert_one_line(rc, err, "not supported by the PyTorch module", "config.model.llm.attn_logit_softcap")


@pytest.mark.parametrize("opset,needle", [(30, "onnxruntime"), (17, "exporter"), (9, "exporter")])
def test_error_opset(tmp_path, capsys, opset, needle):
    workdir, _ = make_run("flow")
    rc, err = run_cli(capsys, [f"--workdir={workdir}", f"--out={tmp_path / 'o'}", f"--opset={opset}"])
    assert_one_line(rc, err, f"--opset={opset}", needle)
    assert not (tmp_path / "o").exists()


def test_onnx_export_is_warning_free_with_a_dynamic_batch(tmp_path):
    """The dynamo exporter on the tiny flow model (one Euler step) emits no warning of any kind, and the graph
    runs at batch 1 and 3 like the PyTorch module."""
    import warnings

    config = to_torch.config_to_dict(model_cfg("flow"))
    policy = tp.VLAPolicy(config, dtype=torch.float32).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = to_onnx.export_onnx(policy, str(tmp_path / to_onnx.ONNX_FILE), num_steps=1)
    assert not [f"{w.category.__name__}: {w.message}" for w in caught]
    session = to_onnx.onnx_session(path)
    assert {tuple(i.shape)[0] for i in (*session.get_inputs(), *session.get_outputs())} == {"batch"}
    for batch in (1, 3):
        inputs = to_onnx.example_inputs(config, batch_size=batch, seed=batch)
        want = parity.torch_actions(policy, inputs, num_steps=1)
        assert np.abs(to_onnx.run_onnx(session, inputs) - want).max() <= TOL


def test_folder_records_the_onnx_exporter():
    folder, report = exported("flow")
    info = report["onnx"]["exporter"]
    assert info.startswith("torch.onnx dynamo exporter, torch ") and info.endswith(f"opset {to_onnx.DEFAULT_OPSET}")
    with open(os.path.join(folder, "config.json")) as f:
        assert json.load(f)["export"]["onnx"]["exporter"] == info
    with open(os.path.join(folder, "README.md")) as f:
        assert f"| ONNX exporter | {info} |" in f.read()


def test_parity_gate_refuses_to_write(tmp_path, capsys):
    workdir, _ = make_run("flow")
    out = tmp_path / "o"
    rc, err = run_cli(capsys, [f"--workdir={workdir}", f"--out={out}", "--format=pytorch", "--tolerance=1e-12"])
    assert_one_line(rc, err, "parity check failed", "torch_f32=")
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith("o.tmp")]


def test_parity_check_fails_on_nonfinite_figures():
    parity.check({"torch_f32": 1e-5, "onnx_f32": 2e-5, "torch_bf16_vs_jax_f32": 0.3, "tolerance_f32": TOL}, TOL)
    for key in ("torch_f32", "onnx_f32", "torch_bf16_vs_jax_f32", "torch_bf16_vs_jax_bf16"):
        for bad in (float("nan"), float("inf")):
            with pytest.raises(parity.ParityError, match=f"{key}={bad} is not finite") as e:
                parity.check({"torch_f32": 0.0, "onnx_f32": 0.0, key: bad}, TOL)
            assert "\n" not in str(e.value)
    with pytest.raises(parity.ParityError, match="onnxruntime float32 actions have 2 non-finite values of 6"):
        parity.finite_actions("onnxruntime float32", np.array([[1.0, np.nan, 0.0], [np.inf, 2.0, 3.0]]), "seed 0")


class NaNPolicy:
    """A PyTorch policy whose every action is NaN."""

    def sample_actions(self, noise, num_steps=None, **obs):
        return torch.full(noise.shape, float("nan"))


def test_parity_measure_raises_on_nonfinite_actions():
    _, saved = make_run("flow")
    cfg = model_cfg("flow")
    with pytest.raises(parity.ParityError, match=r"PyTorch float32 actions have \d+ non-finite values"):
        parity.measure(cfg, saved["params"], torch_policy=NaNPolicy(), seeds=(0,))
    nan_params = jax.tree.map(lambda x: np.full_like(x, np.nan), saved["params"])
    with pytest.raises(parity.ParityError, match="the JAX float32 reference actions have"):
        parity.measure(cfg, nan_params, torch_policy=NaNPolicy(), seeds=(0,))


def nan_run(tmp_path, raw_nan: bool, ema_nan: bool) -> str:
    """A run whose step-5 params (and/or EMA) have 3 NaN values in the first tensor."""
    _, saved = make_run("flow")
    poisoned = {}
    for key, nan in (("params", raw_nan), ("ema_params", ema_nan)):
        flat = to_torch.flatten_params(saved[key])
        first = sorted(flat)[0]
        tree = jax.tree.map(np.copy, saved[key])
        if nan:
            leaf = tree["params"]
            for part in first.split("/"):
                leaf = leaf[part]
            leaf.reshape(-1)[:3] = np.nan
        poisoned[key] = tree
    workdir = str(tmp_path / "nan_run")
    save_checkpoint(workdir, 5, poisoned["params"], poisoned["ema_params"], train_config("flow"), norm_stats())
    return workdir


@pytest.mark.parametrize("ema", [False, True])
def test_export_refuses_nonfinite_parameters(tmp_path, capsys, ema):
    workdir = nan_run(tmp_path, raw_nan=not ema, ema_nan=ema)
    out = tmp_path / "o"
    rc, err = run_cli(capsys, [f"--workdir={workdir}", f"--out={out}"] + (["--ema"] if ema else []))
    assert_one_line(rc, err, "step 5", "holds non-finite parameters", "ema_params" if ema else "params",
                    "pass another step (--step")
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith("o.tmp")]
    if not ema:  # the other set is finite and exports
        report = export(workdir, str(tmp_path / "ema"), ema=True, fmt="pytorch", log=lambda *a: None)
        assert report["parity"]["torch_f32"] <= TOL


def test_write_checkpoint_with_nan_params_is_refused(tmp_path):
    _, saved = make_run("flow")
    params = jax.tree.map(lambda x: np.full_like(x, np.nan), saved["params"])
    workdir = str(tmp_path / "nan_params")
    write_checkpoint(workdir, params, train_config("flow"), norm_stats())
    with pytest.raises(ExportError, match=r"step 0 .*holds non-finite parameters"):
        export(workdir, str(tmp_path / "o"), fmt="pytorch", log=lambda *a: None)
    assert not (tmp_path / "o").exists()


def test_import_errors(tmp_path):
    folder, _ = exported("flow")
    with pytest.raises(ExportError, match="not a PyTorch export"):
        import_torch(str(tmp_path), str(tmp_path / "run"))
    with pytest.raises(ExportError, match="does not match"):
        import_torch(folder, str(tmp_path / "run2"), f"{ROOT}/configs/pretrain.py:debug")


def test_error_discrete_onnx_too_long(tmp_path, capsys):
    workdir, _ = make_run("discrete")
    big = tmp_path / "big_run"
    shutil.copytree(workdir, big)
    meta = big / "checkpoints" / str(STEPS[-1]) / "config" / "metadata"
    config = json.loads(meta.read_text())
    config["model"]["action_horizon"] = 200  # 200 x 5 tokens (the discrete params do not depend on H)
    meta.write_text(json.dumps(config))
    rc, err = run_cli(capsys, [f"--workdir={big}", f"--out={tmp_path / 'o'}", "--format=onnx"])
    assert_one_line(rc, err, "1000 decoding steps", "--format=pytorch")


def test_folders_of_the_flat_layout_are_refused_with_a_re_export_hint():
    folder, _ = exported("flow")
    with open(os.path.join(folder, tp.CONFIG_FILE)) as f:
        config = json.load(f)
    tp.check_config(config)  # today's folder loads
    flat = {**config, "format_version": 1, "readout": True, "location_grid": 8}
    with pytest.raises(tp.UnsupportedModelError, match=r"format_version 1 keeps add-ons as model fields; re-export"):
        tp.check_config(flat)
