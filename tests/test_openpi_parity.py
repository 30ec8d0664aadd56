"""openpi pi0 interop: the name map (fixture and full size), exact round trips, parity with openpi's own outputs
on ../shared/fixtures/openpi/pi0_dummy.npz, the checkpoint importer and the parity tool."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from interop_fixtures import FIXTURES, ROOT, read_shape_list

from vla_jax.config import load_config
from vla_jax.interop import openpi
from vla_jax.models import vla

PI0 = os.path.join(FIXTURES, "pi0_dummy.npz")
NAMES = os.path.join(FIXTURES, "openpi_param_names_pi0.txt")
pytestmark = pytest.mark.skipif(not os.path.isfile(PI0), reason=f"{PI0} not available")


@pytest.fixture(scope="module")
def fixture():
    return openpi.Fixture.load(PI0)


@pytest.fixture(scope="module")
def converted(fixture):
    return openpi.to_vla_jax(fixture.params)


def test_fixture_params_round_trip_exactly(fixture, converted):
    back = openpi.flatten(openpi.to_openpi(converted))
    assert set(back) == set(fixture.params)
    for name, value in fixture.params.items():
        assert back[name].dtype == np.float32 and np.array_equal(back[name], value), name
    again = openpi.flatten(openpi.to_vla_jax(back)["params"])
    for name, value in openpi.flatten(converted["params"]).items():
        assert np.array_equal(again[name], value), name


def test_full_size_pi0_maps_one_to_one_onto_openpi_names():
    """eval_shape of the pi0 preset <-> openpi's full-size name list: every name, every shape, none left over."""
    want = read_shape_list(NAMES)
    config = load_config(os.path.join(ROOT, "configs/pretrain.py") + ":size=pi0")
    assert config.model.openpi_semantics
    abstract = openpi.abstract_variables(config.model)
    theirs = jax.eval_shape(openpi.to_openpi, abstract)
    got = {k: (tuple(v.shape), str(v.dtype)) for k, v in openpi.flatten(theirs).items()}
    assert got == want
    structs = openpi.unflatten({k: jax.ShapeDtypeStruct(s, jnp.float32) for k, (s, _) in want.items()})
    ours = jax.eval_shape(openpi.to_vla_jax, structs)
    openpi.check_against(ours, abstract)
    sizes = openpi.infer_model(structs)
    assert {k: config.model[k.split(".")[0]][k.split(".")[1]] if "." in k else config.model[k]
            for k in sizes} == sizes  # the shapes give back the pi0 preset's sizes


def test_left_over_and_missing_names_are_one_line_errors(fixture, converted):
    params = dict(fixture.params)
    params["PaliGemma/llm/layers/mlp_2/linear"] = np.zeros(1, np.float32)
    with pytest.raises(openpi.OpenpiError, match=r"^openpi parameter PaliGemma/llm/layers/mlp_2/linear has no "
                                                 r"vla_jax counterpart[^\n]*$"):
        openpi.to_vla_jax(params)
    params = {k: v for k, v in fixture.params.items() if k != "state_proj/bias"}
    with pytest.raises(openpi.OpenpiError, match=r"^openpi pi0 parameter state_proj/bias is missing \(1 missing\)$"):
        openpi.to_vla_jax(params)
    ours = {"params": {**converted["params"], "prefix_readout": {"w": np.zeros(2)}}}
    with pytest.raises(openpi.OpenpiError, match=r"^vla_jax parameter prefix_readout/w has no openpi counterpart"):
        openpi.to_openpi(ours)


def test_parity_with_openpi_outputs():
    """Prefix embeddings, velocity (joint pass and KV cache), per-step loss for openpi's noise and time, and
    10-step sampled actions reproduce openpi's within 1e-5 (loss: 1e-4 relative)."""
    diffs = {d.name: d for d in openpi.check_fixture(PI0)}
    assert set(diffs) == {"prefix_tokens", "prefix_mask", "velocity", "velocity_cached", "suffix_tokens",
                          "suffix_ar_mask", "loss", "sampled"}
    for d in diffs.values():
        assert d.ok, d.format()
    assert diffs["prefix_mask"].max_abs == 0.0


def test_openpi_semantics_is_what_closes_the_gap(fixture, converted):
    """With the switch off, the same weights miss openpi's velocity and samples by more than the tolerance."""
    config = fixture.config()
    config.model.openpi_semantics = False
    model = vla.VLA(vla.make_config(config.model))
    batch = fixture.batch()
    obs = {k: batch[k] for k in ("images", "image_mask", "tokens", "token_mask", "state", "state_mask",
                                 "action_dim_mask")}
    variables = jax.tree.map(jnp.asarray, converted)
    x = fixture.inputs
    v = jax.jit(lambda p, o: model.apply(p, o, x["x_t"], x["t"], method=vla.VLA.full_velocity))(variables, obs)
    assert np.abs(np.asarray(v) - fixture.outputs["velocity"]).max() > openpi.ATOL


def test_openpi_semantics_keeps_noise_in_padded_dims(fixture, converted):
    """With a 14-D action space, openpi's flow keeps noise in dims 14..31 (x_t, samples) and its loss averages
    over all 32 dims; vla_jax's own semantics zero them and average over the real dims."""
    variables = jax.tree.map(jnp.asarray, converted)
    batch = fixture.batch()
    batch["action_dim_mask"] = np.broadcast_to(np.arange(32) < 14, (2, 32)).copy()
    noise, t = fixture.outputs["loss_noise"], fixture.outputs["loss_time"]
    for on in (True, False):
        config = fixture.config()
        config.model.openpi_semantics = on
        model = vla.VLA(vla.make_config(config.model))
        sq, elem = jax.jit(lambda p, b: model.apply(p, vla.masked_state(b), noise, t, method=vla.VLA.flow_errors))(
            variables, batch)
        assert np.asarray(elem).sum() == 2 * 50 * (32 if on else 14)
        obs = {k: v for k, v in batch.items() if k in ("images", "image_mask", "tokens", "token_mask", "state",
                                                         "state_mask", "action_dim_mask")}
        sampled = np.asarray(jax.jit(lambda p, o: vla.sample_actions(model, p, o, noise, 2))(variables, obs))
        assert (np.abs(sampled[..., 14:]).min() > 0) if on else (np.abs(sampled[..., 14:]).max() == 0)


def test_check_parity_tool_passes_on_the_fixture():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools/check_parity.py"), f"--fixture={PI0}"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [ln.split()[0] for ln in lines[:-1]] == ["prefix_tokens", "prefix_mask", "velocity", "velocity_cached",
                                                   "suffix_tokens", "suffix_ar_mask", "loss", "sampled"]
    assert lines[-1].startswith("parity: ok")


def test_check_parity_tool_rejects_a_non_fixture(tmp_path):
    bad = tmp_path / "x.npz"
    np.savez(bad, a=np.zeros(1))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools/check_parity.py"), f"--fixture={bad}"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "is not an openpi fixture" in proc.stderr


# ----------------------------------------------------------------------------------------- import
def _openpi_checkpoint(path, fixture, state_dims: int = 14, action_dims: int = 14) -> str:
    import orbax.checkpoint as ocp

    ckpt = os.path.join(path, "openpi_ckpt")
    ocp.PyTreeCheckpointer().save(os.path.join(ckpt, "params"), {"params": openpi.unflatten(fixture.params)})
    rng = np.random.default_rng(0)

    def block(n):
        return {"mean": rng.normal(size=n).tolist(), "std": rng.uniform(0.5, 1.0, n).tolist(),
                "q01": (-rng.uniform(1, 2, n)).tolist(), "q99": rng.uniform(1, 2, n).tolist()}

    os.makedirs(os.path.join(ckpt, "assets", "trossen"))
    with open(os.path.join(ckpt, "assets", "trossen", "norm_stats.json"), "w") as f:
        json.dump({"norm_stats": {"state": block(state_dims), "actions": block(action_dims)}}, f)
    return ckpt


def _import(ckpt, out, *flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools/import_openpi.py"), f"--checkpoint={ckpt}",
                           f"--out={out}", *flags], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})


@pytest.fixture(scope="module")
def imported(tmp_path_factory, fixture):
    tmp = tmp_path_factory.mktemp("openpi_import")
    ckpt = _openpi_checkpoint(str(tmp), fixture)
    out = str(tmp / "run")
    proc = _import(ckpt, out, "--dataset=aloha", "--dtype=float32")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return ckpt, out, proc.stdout


def test_import_writes_the_converted_params_and_norm_stats(imported, converted):
    from vla_jax.data.norm_stats import Normalizer
    from vla_jax.train.checkpoint import load_params

    ckpt, out, report = imported
    assert "46 vla_jax parameters from 50 openpi arrays" in report and "none left over" in report
    assert "dataset 'aloha' (state 14-D, action 14-D, normal)" in report
    ck = load_params(out)
    got, want = openpi.flatten(ck.params["params"]), openpi.flatten(converted["params"])
    assert set(got) == set(want)
    for name in want:
        assert np.array_equal(got[name], want[name]), name
    model = ck.config["model"]
    assert model["openpi_semantics"] and model["llm"]["width"] == 64 and model["vit"]["depth"] == 2
    assert model["vocab_size"] == 1024 and model["image_size"] == 224 and model["action_horizon"] == 50
    with open(os.path.join(ckpt, "assets", "trossen", "norm_stats.json")) as f:
        theirs = json.load(f)["norm_stats"]["actions"]
    stats = ck.norm_stats["aloha"]
    x = np.random.default_rng(1).normal(size=(5, 14)).astype(np.float32)
    openpi_norm = (x - np.asarray(theirs["mean"])) / (np.asarray(theirs["std"]) + 1e-6)
    np.testing.assert_allclose(Normalizer(stats["action"], stats["action_normalization"])(x), openpi_norm, rtol=1e-6,
                               atol=1e-6)


def test_import_errors_are_one_line(tmp_path, fixture):
    proc = _import(str(tmp_path), str(tmp_path / "run"))
    assert proc.returncode == 2 and "is not an openpi checkpoint" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    ckpt = _openpi_checkpoint(str(tmp_path), fixture, action_dims=40)
    proc = _import(ckpt, str(tmp_path / "run"))
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "openpi norm stats 'actions' have dims" in proc.stderr and "1..32" in proc.stderr


@pytest.mark.slow
def test_export_of_the_imported_run_passes_its_parity_gate(imported, tmp_path):
    _, out, _ = imported
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools/export.py"), f"--workdir={out}",
                           f"--out={tmp_path / 'export'}", "--format=pytorch"],
                          capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.path.isfile(tmp_path / "export" / "model.safetensors")


# ----------------------------------------------------------------------------------------- export back to openpi
def _export(workdir, out, *flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools/export.py"), f"--workdir={workdir}",
                           f"--out={out}", "--format=openpi", *flags],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"})


def test_openpi_export_gives_back_the_imported_checkpoint(imported, fixture, tmp_path):
    """openpi layout -> import_openpi -> export --format=openpi: every array bit for bit (name, shape, float32),
    norm_stats.json equal to the original (openpi's std, not the shifted one), under the dataset's name."""
    import orbax.checkpoint as ocp
    from etils import epath

    ckpt, run, _ = imported
    out = tmp_path / "openpi_out"
    proc = _export(run, out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "norm stats: aloha" in proc.stdout
    handler = ocp.PyTreeCheckpointHandler()
    path = epath.Path(out / "params")
    tree = handler.metadata(path).tree
    assert set(tree) == {"params"}
    target = {"params": jax.tree.map(lambda _: 0, tree["params"])}
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
    got = openpi.flatten(handler.restore(path, args=ocp.args.PyTreeRestore(item=target, restore_args=args))["params"])
    handler.close()
    assert set(got) == set(fixture.params)
    for name, want in fixture.params.items():
        assert (got[name].shape, got[name].dtype) == (want.shape, np.dtype(np.float32)), name
        assert got[name].tobytes() == want.tobytes(), name
    assert os.listdir(out / "assets") == ["aloha"]
    with open(os.path.join(ckpt, "assets", "trossen", "norm_stats.json")) as f, \
            open(out / "assets" / "aloha" / "norm_stats.json") as g:
        assert json.load(g) == json.load(f)


def test_openpi_norm_stats_of_a_trained_dataset_normalize_alike():
    """Without ``std_openpi`` the std shift is undone by arithmetic: openpi's (x - mean) / (std + 1e-6) equals
    vla_jax's; a dataset vla_jax normalizes otherwise (bounds_q99, masked dims) is refused in one line."""
    from vla_jax.data.norm_stats import Normalizer

    rng = np.random.default_rng(2)
    keys = ("mean", "std", "min", "max", "q01", "q99")
    stats = {ours: {k: rng.uniform(0.5, 1.5, 6).tolist() for k in keys} for ours in ("state", "action")}
    stats["action_normalization"] = "normal"
    theirs = openpi.to_openpi_norm_stats(stats, "d")
    assert set(theirs) == {"state", "actions"} and set(theirs["actions"]) == set(openpi.NORM_KEYS)
    x = rng.normal(size=(4, 6))
    openpi_norm = (x - np.asarray(theirs["actions"]["mean"])) / (np.asarray(theirs["actions"]["std"]) + 1e-6)
    np.testing.assert_allclose(Normalizer(stats["action"], "normal")(x), openpi_norm, rtol=1e-6, atol=1e-6)
    with pytest.raises(openpi.OpenpiError, match=r"^dataset 'd' normalizes action with 'bounds_q99'; [^\n]*$"):
        openpi.to_openpi_norm_stats({k: v for k, v in stats.items() if k != "action_normalization"}, "d")
    with pytest.raises(openpi.OpenpiError, match=r"^dataset 'd' leaves state dims \[5\] unnormalized[^\n]*$"):
        openpi.to_openpi_norm_stats({**stats, "state_norm_mask": [True] * 5 + [False]}, "d")


def test_openpi_export_refuses_other_models_and_datasets_in_one_line(imported, tmp_path):
    from test_export_helpers import make_run

    from vla_jax.export.package import ExportError, export

    workdir, _ = make_run("flow")  # the debug preset: vla_jax's flow semantics, add-ons
    with pytest.raises(ExportError, match=r"^preset 'debug' has no openpi counterpart: config.model.openpi_semantics "
                                          r"is off[^\n]*$"):
        export(workdir, str(tmp_path / "a"), fmt="openpi", log=lambda *a: None)
    _, run, _ = imported
    proc = _export(run, tmp_path / "b", "--dataset=bridge")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "--dataset=bridge has no state and action norm stats" in proc.stderr and "aloha" in proc.stderr
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")
