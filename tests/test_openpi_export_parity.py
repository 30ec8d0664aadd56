"""openpi's pi0 and pi0.5 fixtures (../shared/fixtures/openpi) through the exported PyTorch port and its ONNX
graphs in onnxruntime, against openpi's own outputs (vla_jax/export/parity.py ``fixture_outputs``, shared with
``tools/check_parity.py --backend=torch|onnx``); pi0.5's parameter names between JAX and PyTorch; the port's
one-line refusals of pi0.5 configs it cannot run; a pi0.5 run through ``tools/export.py``'s parity gate."""

from __future__ import annotations

import copy
import importlib.util
import os

import numpy as np
import pytest

from interop_fixtures import FIXTURES, ROOT

from vla_jax.export import to_torch
from vla_jax.export import torch_port as tp
from vla_jax.interop import openpi
from vla_jax.models.vla import make_config

PATHS = {name: os.path.join(FIXTURES, f"{name}_dummy.npz") for name in ("pi0", "pi05")}
pytestmark = pytest.mark.skipif(not all(map(os.path.isfile, PATHS.values())), reason=f"{FIXTURES} not available")
OUTPUTS = ["prefix_tokens", "prefix_mask", "velocity", "velocity_cached", "suffix_tokens", "suffix_ar_mask",
           "loss", "sampled"]
EXPECTED = {"pi0": OUTPUTS, "pi05": OUTPUTS[:6] + ["adarms_cond"] + OUTPUTS[6:]}
EXACT = ("prefix_mask", "suffix_ar_mask")


def check_parity_tool():
    spec = importlib.util.spec_from_file_location("check_parity", os.path.join(ROOT, "tools", "check_parity.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_reproduces(diffs: list, name: str) -> None:
    """Every output of ``name``'s fixture, in model_outputs' order, within tolerance; masks and flags exact."""
    assert [d.name for d in diffs] == EXPECTED[name]
    for d in diffs:
        assert d.ok, d.format()
        assert d.tol == (openpi.LOSS_RTOL if d.name == "loss" else 1e-4)
        assert d.max_abs == 0.0 or d.name not in EXACT, d.format()


@pytest.fixture(scope="module")
def pi05():
    """The pi0.5 fixture, its converted variables and VLAConfig."""
    fixture = openpi.Fixture.load(PATHS["pi05"])
    return fixture, openpi.to_vla_jax(fixture.params), make_config(fixture.config().model)


# ----------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("name", ["pi0", "pi05"])
def test_torch_port_reproduces_openpi(name):
    """Prefix, suffix (pi0.5: adarms_cond), velocity joint / KV-cached, loss and 10-step samples of the PyTorch
    port built from the converted weights match openpi's within 1e-4 (loss: 1e-4 relative)."""
    assert_reproduces(openpi.check_fixture(PATHS[name], "torch"), name)


@pytest.mark.parametrize("name", ["pi0", pytest.param("pi05", marks=pytest.mark.slow)])
def test_onnx_reproduces_openpi_through_the_tool(name, capsys):
    """tools/check_parity.py --backend=onnx: the port's probe graph and the exported policy.onnx in onnxruntime,
    one line per output, exit 0."""
    rc = check_parity_tool().main([f"--fixture={PATHS[name]}", "--backend=onnx"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0, "\n".join(lines)
    assert [ln.split()[0] for ln in lines[:-1]] == EXPECTED[name]
    assert all(ln.endswith(" ok") for ln in lines[:-1]) and lines[-1] == f"parity: ok ({len(lines) - 1} outputs, onnx)"


def test_check_parity_tool_refuses_an_unknown_backend(capsys):
    with pytest.raises(SystemExit) as e:
        check_parity_tool().main([f"--fixture={PATHS['pi0']}", "--backend=tflite"])
    assert e.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- pi0.5 names / config
def test_pi05_parameter_names_both_ways(pi05):
    """Adaptive norms: JAX ``.../modulation/w`` [W, 3W] -> PyTorch ``....modulation.weight`` [3W, W] (openpi's
    ``Dense_0/kernel`` transposed); no state_proj and no expert norm scales; the round trip is bit-exact."""
    fixture, variables, cfg = pi05
    sd = to_torch.jax_to_torch(variables, cfg)
    llm = "PaliGemma/llm/"
    for i in range(cfg.decoder.depth):
        for ours, theirs in (("pre_attn_norm_1", "pre_attention_norm_1"), ("pre_mlp_norm_1", "pre_ffw_norm_1")):
            assert np.array_equal(sd[f"llm.layers.{i}.{ours}.modulation.weight"],
                                  fixture.params[f"{llm}layers/{theirs}/Dense_0/kernel"][i].T)
            assert np.array_equal(sd[f"llm.layers.{i}.{ours}.modulation.bias"],
                                  fixture.params[f"{llm}layers/{theirs}/Dense_0/bias"][i])
        assert f"llm.layers.{i}.pre_attn_norm_0.weight" in sd and f"llm.layers.{i}.pre_attn_norm_1.weight" not in sd
    assert np.array_equal(sd["llm.final_norm_1.modulation.weight"],
                          fixture.params[f"{llm}final_norm_1/Dense_0/kernel"].T)
    assert sd["llm.final_norm_1.modulation.weight"].shape == (192, 64) and "llm.final_norm_1.weight" not in sd
    assert sd["time_mlp_in.weight"].shape == (64, 64) and not any(k.startswith("state_proj") for k in sd)
    back = to_torch.flatten_params(to_torch.torch_to_jax(sd, cfg))
    want = to_torch.flatten_params(variables)
    assert set(back) == set(want) and all(np.array_equal(back[k], want[k]) for k in want)
    policy = to_torch.torch_policy(variables, cfg)  # load_state_dict is strict: every name has its place
    assert policy.action_expert is tp.action_experts.Pi05 and not hasattr(policy, "state_proj")


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(action_expert="pi1"), r"^action_expert='pi1' is not supported by the PyTorch module "
                                              r"\(one of \['pi0', 'pi05'\]\)$"),
    (lambda c: c["decoder"]["experts"][1].update(adaptive_norm=False),
     r"^decoder.experts adaptive_norm=\[False, False\] does not match action_expert='pi05'$"),
    (lambda c: c.update(addons=[{"name": "prefix_readout", "kwargs": []}]),
     r"^add-ons \['prefix_readout'\] change the suffix's state token, which action_expert='pi05' does not have$"),
])
def test_port_refuses_pi05_configs_it_cannot_run(pi05, change, message):
    _, _, cfg = pi05
    config = copy.deepcopy(to_torch.config_to_dict(cfg))
    tp.check_config(config)
    change(config)
    with pytest.raises(tp.UnsupportedModelError, match=message):
        tp.check_config(config)


# ----------------------------------------------------------------------------------------- export folder
@pytest.mark.slow
def test_pi05_run_exports_and_the_folder_reproduces_openpi(pi05, tmp_path):
    """A pi0.5 run (the converted fixture) through tools/export.py's export: its parity gate passes, and the
    folder's PyTorch module samples openpi's actions from ``in/noise`` within 1e-4. (Its ONNX graph is the
    port's, checked against openpi by ``test_onnx_reproduces_openpi_through_the_tool[pi05]``.)"""
    from vla_jax.export import parity
    from vla_jax.export.package import export
    from vla_jax.train.checkpoint import write_checkpoint

    fixture, variables, _ = pi05
    config = fixture.config()
    write_checkpoint(str(tmp_path / "run"), variables, config, None)
    report = export(str(tmp_path / "run"), str(tmp_path / "out"), fmt="pytorch", seeds=(0,), log=lambda *a: None)
    assert report["parity"]["torch_f32"] <= 1e-4
    batch = fixture.batch()
    inputs = {**{k: batch[k] for k in parity.OBS_KEYS}, "noise": fixture.inputs["noise"]}
    policy = tp.VLAPolicy.from_pretrained(str(tmp_path / "out"))
    assert np.abs(parity.torch_actions(policy, inputs) - fixture.outputs["sampled"]).max() <= 1e-4
