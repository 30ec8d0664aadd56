"""LeRobot pi0 / pi0.5 interop: the full-size key maps against LeRobot's 778-key pi0 list (pi0.5's derived from it by
modeling_pi05's differences), layouts against openpi's JAX -> PyTorch conversion, the pi0 folder (config / processors
/ normalizer) against a LeRobot-written example and the pi0.5 folder against that example changed as LeRobot's
pi0.5 source says, the float32 round trips run -> folder -> run, bfloat16 dtypes, LeRobot's own key spellings and
one-line refusals."""

from __future__ import annotations

import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import load_file
from safetensors.torch import save_file

from interop_fixtures import FIXTURES, ROOT, read_shape_list

from vla_jax.config import load_config
from vla_jax.interop import lerobot, openpi
from vla_jax.train.checkpoint import load_params, write_checkpoint

PI0 = os.path.join(FIXTURES, "pi0_dummy.npz")
PI05 = os.path.join(FIXTURES, "pi05_dummy.npz")
KEYS = os.path.join(FIXTURES, "lerobot_pi0_keys.txt")
EXAMPLE = os.path.join(FIXTURES, "lerobot_pi0_folder_example")
pytestmark = pytest.mark.skipif(not all(os.path.exists(p) for p in (PI0, PI05, EXAMPLE)),
                                reason=f"{FIXTURES} not available")


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stats(rng, n: int) -> dict:
    return {"mean": rng.normal(size=n).tolist(), "std": rng.uniform(0.5, 1.0, n).tolist(),
            "q01": (-rng.uniform(1, 2, n)).tolist(), "q99": rng.uniform(1, 2, n).tolist()}


@pytest.fixture(scope="module")
def fixture():
    return openpi.Fixture.load(PI0)


@pytest.fixture(scope="module")
def run(tmp_path_factory, fixture):
    """A params-only pi0 run at the fixture's size (float32) with openpi-imported 14-D 'aloha' statistics."""
    rng = np.random.default_rng(0)
    stats = openpi.convert_norm_stats({"state": _stats(rng, 14), "actions": _stats(rng, 14)}, "aloha", 32, 32)
    workdir = str(tmp_path_factory.mktemp("lerobot") / "run")
    write_checkpoint(workdir, openpi.to_vla_jax(fixture.params), fixture.config(), stats)
    return workdir


@pytest.fixture(scope="module")
def folder(run):
    out = os.path.join(os.path.dirname(run), "folder")
    assert load_tool("export").main([f"--workdir={run}", f"--out={out}", "--format=lerobot"]) == 0
    return out


@pytest.fixture(scope="module")
def run05(tmp_path_factory):
    """A params-only pi05 run at the pi0.5 fixture's size (float32, 200 prompt tokens) with 14-D 'aloha' statistics
    normalized bounds_q99 (vla_jax's quantile normalization)."""
    fixture = openpi.Fixture.load(PI05)
    stats = openpi.convert_norm_stats({"state": _stats(np.random.default_rng(1), 14),
                                       "actions": _stats(np.random.default_rng(2), 14)}, "aloha", 32, 32)
    stats["aloha"] |= {"state_normalization": "bounds_q99", "action_normalization": "bounds_q99"}
    workdir = str(tmp_path_factory.mktemp("lerobot05") / "run")
    write_checkpoint(workdir, openpi.to_vla_jax(fixture.params), fixture.config(), stats)
    return workdir


@pytest.fixture(scope="module")
def folder05(run05):
    out = os.path.join(os.path.dirname(run05), "folder")
    assert load_tool("export").main([f"--workdir={run05}", f"--out={out}", "--format=lerobot"]) == 0
    return out


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------- names and layouts
def test_full_size_pi0_maps_onto_lerobots_778_keys():
    """eval_shape of the pi0 preset -> exactly LeRobot 0.4.4's PI0Policy keys and shapes (none left over, none
    missing), its bfloat16 dtypes, and back; the shapes give back the preset's sizes."""
    want = read_shape_list(KEYS)
    assert len(want) == 778
    config = load_config(os.path.join(ROOT, "configs/pretrain.py") + ":size=pi0")
    abstract = openpi.abstract_variables(config.model)
    assert lerobot.expected_shapes(abstract) == {k: shape for k, (shape, _) in want.items()}
    assert {k: lerobot.lerobot_dtype(k, "bfloat16") for k in want} == {k: d for k, (_, d) in want.items()}
    assert {lerobot.lerobot_dtype(k, "float32") for k in want} == {"float32"}
    shapes = {k: tuple(v.shape) for k, v in openpi.flatten(abstract["params"]).items()}
    structs = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, (s, _) in want.items()}
    openpi.check_against(jax.eval_shape(lambda sd: lerobot.from_lerobot(sd, shapes), structs), abstract)
    heads = lerobot.head_sizes(None, {"paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m"})
    sizes = lerobot.infer_model({k: s for k, (s, _) in want.items()}, heads)
    assert {k: config.model[k.split(".")[0]][k.split(".")[1]] if "." in k else config.model[k] for k in sizes} == sizes


def _openpi_pytorch_layout(p: dict) -> dict:
    """openpi's JAX -> PyTorch conversion (examples/convert_jax_model_to_pytorch.py, the weights LeRobot loads),
    written out per key from openpi's pi0 or pi0.5 arrays (pi0.5: the expert's norms ``Dense_0`` as
    ``*.dense.{weight = kernel.T, bias}``, time_mlp_* and no state_proj)."""
    vis = lerobot.VIS
    out = {vis + "embeddings.patch_embedding.weight": p["PaliGemma/img/embedding/kernel"].transpose(3, 2, 0, 1),
           vis + "embeddings.patch_embedding.bias": p["PaliGemma/img/embedding/bias"],
           vis + "embeddings.position_embedding.weight": p["PaliGemma/img/pos_embedding"].reshape(
               -1, p["PaliGemma/img/embedding/bias"].shape[0]),
           vis + "post_layernorm.weight": p["PaliGemma/img/Transformer/encoder_norm/scale"],
           vis + "post_layernorm.bias": p["PaliGemma/img/Transformer/encoder_norm/bias"],
           lerobot.P + "paligemma.model.multi_modal_projector.linear.weight": p["PaliGemma/img/head/kernel"].T,
           lerobot.P + "paligemma.model.multi_modal_projector.linear.bias": p["PaliGemma/img/head/bias"],
           lerobot.EMBED: p["PaliGemma/llm/embedder/input_embedding"],
           lerobot.LM_HEAD: p["PaliGemma/llm/embedder/input_embedding"]}
    block = "PaliGemma/img/Transformer/encoderblock/"
    for i in range(p[block + "LayerNorm_0/scale"].shape[0]):
        enc = lerobot.ENC.format(i=i)
        for n, (theirs, t) in (("layer_norm1", ("LayerNorm_0", False)), ("layer_norm2", ("LayerNorm_1", False)),
                               ("mlp.fc1", ("MlpBlock_0/Dense_0", True)), ("mlp.fc2", ("MlpBlock_0/Dense_1", True))):
            out[f"{enc}{n}.weight"] = p[f"{block}{theirs}/{'kernel' if t else 'scale'}"][i].T
            out[f"{enc}{n}.bias"] = p[f"{block}{theirs}/bias"][i]
        attn = block + "MultiHeadDotProductAttention_0/"
        for n, theirs in (("q", "query"), ("k", "key"), ("v", "value"), ("out", "out")):
            kernel = p[f"{attn}{theirs}/kernel"][i]
            width = kernel.shape[-1] if n == "out" else kernel.shape[0]
            out[f"{enc}self_attn.{n}_proj.weight"] = kernel.reshape(-1, width).T
            out[f"{enc}self_attn.{n}_proj.bias"] = p[f"{attn}{theirs}/bias"][i].reshape(-1)
    llm = "PaliGemma/llm/"
    for e, sfx in ((0, ""), (1, "_1")):
        q = p[f"{llm}layers/attn/q_einsum{sfx}/w"]
        for i in range(q.shape[0]):
            layer = f"{lerobot.DEC[e]}layers.{i}."
            kv, vec = p[f"{llm}layers/attn/kv_einsum{sfx}/w"][i], p[f"{llm}layers/attn/attn_vec_einsum{sfx}/w"][i]
            gating = p[f"{llm}layers/mlp{sfx}/gating_einsum"][i]
            out |= {layer + "self_attn.q_proj.weight": q[i].transpose(0, 2, 1).reshape(-1, q.shape[2]),
                    layer + "self_attn.k_proj.weight": kv[0, 0].T, layer + "self_attn.v_proj.weight": kv[1, 0].T,
                    layer + "self_attn.o_proj.weight": vec.reshape(-1, vec.shape[-1]).T,
                    layer + "mlp.gate_proj.weight": gating[0].T, layer + "mlp.up_proj.weight": gating[1].T,
                    layer + "mlp.down_proj.weight": p[f"{llm}layers/mlp{sfx}/linear"][i].T}
            for theirs, ours in (("pre_attention_norm", "input_layernorm"),
                                 ("pre_ffw_norm", "post_attention_layernorm")):
                dense = f"{llm}layers/{theirs}{sfx}/Dense_0/"
                if dense + "kernel" in p:
                    out[f"{layer}{ours}.dense.weight"] = p[dense + "kernel"][i].T
                    out[f"{layer}{ours}.dense.bias"] = p[dense + "bias"][i]
                else:
                    out[f"{layer}{ours}.weight"] = p[f"{llm}layers/{theirs}{sfx}/scale"][i]
        dense = f"{llm}final_norm{sfx}/Dense_0/"
        if dense + "kernel" in p:
            out[f"{lerobot.DEC[e]}norm.dense.weight"] = p[dense + "kernel"].T
            out[f"{lerobot.DEC[e]}norm.dense.bias"] = p[dense + "bias"]
        else:
            out[f"{lerobot.DEC[e]}norm.weight"] = p[f"{llm}final_norm{sfx}/scale"]
    for name in ("state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out",
                 "time_mlp_in", "time_mlp_out"):
        if f"{name}/kernel" in p:
            out[f"model.{name}.weight"], out[f"model.{name}.bias"] = p[f"{name}/kernel"].T, p[f"{name}/bias"]
    return out


@pytest.mark.parametrize("path, variant", [(PI0, "pi0"), (PI05, "pi05")])
def test_layouts_are_openpis_pytorch_conversion(path, variant):
    """openpi params -> vla_jax -> LeRobot equals openpi's own JAX -> PyTorch conversion, key for key, bit for bit
    (pi0 and pi0.5 fixtures); the expert's unused lm_head is zeros [V, D_1]."""
    params = openpi.Fixture.load(path).params
    got = lerobot.to_lerobot(openpi.to_vla_jax(params), variant)
    want = _openpi_pytorch_layout(params)
    assert set(got) == set(want) | {lerobot.EXPERT_LM_HEAD}
    for key, value in want.items():
        assert got[key].shape == value.shape and np.array_equal(got[key], value), key
    assert got[lerobot.EXPERT_LM_HEAD].shape == (1024, 64) and not got[lerobot.EXPERT_LM_HEAD].any()


def _pi05_keys(width: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """PI05Policy's full-size keys, shapes and bfloat16 dtypes from PI0Policy's list by what modeling_pi05 changes
    (LeRobot 0.4.4): no state_proj; time_mlp_{in,out} Linear(D, D) for action_time_mlp_* (whose input is 2D: action
    and time concatenated); each expert RMSNorm adaptive (``dense`` Linear(D, 3D), no weight), float32 under
    to_bfloat16_for_selected_params (its names contain input_layernorm, post_attention_layernorm, model.norm)."""
    out = {}
    for key, (shape, dtype) in read_shape_list(KEYS).items():
        if key.startswith("model.state_proj."):
            continue
        if key.startswith(lerobot.DEC[1]) and key.endswith(("layernorm.weight", "model.norm.weight")):
            stem = key[:-len("weight")]
            out |= {stem + "dense.weight": ((3 * width, width), "float32"),
                    stem + "dense.bias": ((3 * width,), "float32")}
            continue
        if key.startswith("model.action_time_mlp_"):
            key, shape = key.replace("action_time_mlp_", "time_mlp_"), shape[:1] + (width,) * (len(shape) - 1)
        out[key] = (shape, dtype)
    return out


def test_full_size_pi05_maps_onto_lerobots_pi05_keys():
    """eval_shape of the pi05 preset -> PI05Policy's keys and shapes (none left over, none missing), their bfloat16
    dtypes, and back; the shapes give back the preset's sizes (max_state_dim is not in pi0.5's weights)."""
    config = load_config(os.path.join(ROOT, "configs/pretrain.py") + ":size=pi05")
    abstract = openpi.abstract_variables(config.model)
    want = _pi05_keys(config.model.expert.width)
    assert len(want) == 778 - 2 + 18 * 2 + 1
    assert lerobot.expected_shapes(abstract, "pi05") == {k: shape for k, (shape, _) in want.items()}
    assert {k: lerobot.lerobot_dtype(k, "bfloat16") for k in want} == {k: d for k, (_, d) in want.items()}
    shapes = {k: tuple(v.shape) for k, v in openpi.flatten(abstract["params"]).items()}
    structs = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, (s, _) in want.items()}
    openpi.check_against(jax.eval_shape(lambda sd: lerobot.from_lerobot(sd, shapes, "pi05"), structs), abstract)
    heads = lerobot.head_sizes(None, {"paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m"})
    sizes = lerobot.infer_model({k: s for k, (s, _) in want.items()}, heads)
    assert "max_state_dim" not in sizes
    assert {k: config.model[k.split(".")[0]][k.split(".")[1]] if "." in k else config.model[k] for k in sizes} == sizes


def test_pi05_load_time_key_fixes_are_lerobots():
    """PI05Policy's load: unprefixed action_time_mlp_* renamed time_mlp_*, unprefixed state_proj.* and expert norm
    weights dropped, model. added; prefixed keys kept as they are."""
    expert = "paligemma_with_expert.gemma_expert.model."
    keys = {"action_time_mlp_in.weight": 1, "state_proj.bias": 2, expert + "layers.3.input_layernorm.weight": 3,
            expert + "layers.0.post_attention_layernorm.weight": 4, expert + "norm.weight": 5,
            expert + "norm.dense.bias": 6, "model.state_proj.weight": 7, "model.action_time_mlp_out.bias": 8}
    assert lerobot.canonical_keys(keys, "pi05") == {
        "model.time_mlp_in.weight": 1, "model." + expert + "norm.dense.bias": 6, "model.state_proj.weight": 7,
        "model.action_time_mlp_out.bias": 8}


# ----------------------------------------------------------------------------------------- the folder
def _structure(x):
    """Ordered dict keys, list lengths and leaf types, recursively."""
    if isinstance(x, dict):
        return [(k, _structure(v)) for k, v in x.items()]
    if isinstance(x, list):
        return [_structure(v) for v in x]
    return type(x).__name__


def _leaves(x, path=""):
    if isinstance(x, dict):
        return {p: v for k, sub in x.items() for p, v in _leaves(sub, f"{path}.{k}" if path else k).items()}
    if isinstance(x, list) and any(isinstance(v, (dict, list)) for v in x):
        return {p: v for i, sub in enumerate(x) for p, v in _leaves(sub, f"{path}[{i}]").items()}
    return {path: x}


def test_folder_has_the_example_structure_and_the_runs_values(folder, run):
    """config.json / policy_{pre,post}processor.json: the example's keys in its order, its list lengths and value
    types; at the fixture's size (3 cameras, 14-D, chunk 50, 48 tokens) every value equals the example's but the
    Gemma variant names. The normalizer files hold the example's keys with the run's mean / std in float32."""
    assert sorted(os.listdir(folder)) == sorted(os.listdir(EXAMPLE) + [lerobot.WEIGHTS_FILE])
    for name in (lerobot.CONFIG_FILE, lerobot.PREPROCESSOR_FILE, lerobot.POSTPROCESSOR_FILE):
        ours, theirs = _json(os.path.join(folder, name)), _json(os.path.join(EXAMPLE, name))
        assert _structure(ours) == _structure(theirs), name
        differ = {p for p, v in _leaves(ours).items() if _leaves(theirs)[p] != v}
        assert differ == ({"paligemma_variant", "action_expert_variant"} if name == lerobot.CONFIG_FILE else set())
    config = _json(os.path.join(folder, lerobot.CONFIG_FILE))
    assert (config["paligemma_variant"], config["action_expert_variant"]) == ("dummy", "dummy")
    stats = load_params(run).norm_stats["aloha"]
    for name in (n for n in os.listdir(EXAMPLE) if n.endswith(".safetensors")):
        ours, theirs = load_file(os.path.join(folder, name)), load_file(os.path.join(EXAMPLE, name))
        assert {k: (v.shape, v.dtype) for k, v in ours.items()} == {k: (v.shape, v.dtype) for k, v in theirs.items()}
        for key, value in ours.items():
            quantity, stat = key.rsplit(".", 1)
            expected = stats["state" if quantity == "observation.state" else "action"][stat]
            assert np.array_equal(value, np.asarray(expected, np.float32)), key


def test_policy_config_takes_the_runs_sizes():
    """Chunk, action steps, max dims, cameras, resolution, prompt length, flow steps, variants from config.model."""
    model = load_config(os.path.join(ROOT, "configs/pretrain.py") + ":size=pi0").model.to_dict()
    model |= {"action_horizon": 10, "max_text_len": 64, "num_flow_steps": 5, "num_cameras": 4, "image_size": 112,
              "max_state_dim": 24}
    config = lerobot.policy_config(model, 7, 6, "bfloat16")
    assert (config["chunk_size"], config["n_action_steps"], config["tokenizer_max_length"]) == (10, 10, 64)
    assert (config["num_inference_steps"], config["max_state_dim"], config["max_action_dim"]) == (5, 24, 32)
    assert (config["paligemma_variant"], config["action_expert_variant"], config["dtype"]) == \
        ("gemma_2b", "gemma_300m", "bfloat16")
    assert list(config["input_features"]) == [f"observation.images.{c}" for c in
                                              ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb", "camera_3")] + \
        ["observation.state"]
    assert config["input_features"]["observation.images.camera_3"]["shape"] == [3, 112, 112]
    assert config["image_resolution"] == [112, 112] and config["output_features"]["action"]["shape"] == [6]
    pre, _ = lerobot.processors(config)
    assert pre["steps"][3]["config"]["max_length"] == 64


def test_round_trip_is_bit_exact_in_float32(folder, run, tmp_path, capsys):
    """run -> --format=lerobot -> import_lerobot: every parameter bit for bit, the sizes, chunk, prompt length and
    cameras of the run, the statistics (float32) under --dataset; every weight written float32."""
    with safe_open(os.path.join(folder, lerobot.WEIGHTS_FILE), framework="pt") as f:
        assert len(list(f.keys())) == 126 and {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    out = str(tmp_path / "back")
    assert load_tool("import_lerobot").main([f"--folder={folder}", f"--out={out}", "--dataset=aloha"]) == 0
    assert "46 vla_jax parameters from LeRobot's pi0 state_dict" in capsys.readouterr().out
    before, after = load_params(run), load_params(out)
    got, want = openpi.flatten(after.params["params"]), openpi.flatten(before.params["params"])
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == np.float32 and got[name].tobytes() == want[name].tobytes(), name
    for key in ("action_horizon", "max_text_len", "num_cameras", "image_size", "vit", "llm", "expert",
                "openpi_semantics", "num_flow_steps"):
        assert after.config["model"][key] == before.config["model"][key], key
    for quantity in ("state", "action"):
        for stat in ("mean", "std"):
            assert after.norm_stats["aloha"][quantity][stat] == \
                np.asarray(before.norm_stats["aloha"][quantity][stat], np.float32).tolist()


def test_bfloat16_export_keeps_lerobots_float32_keys(run, tmp_path):
    """--dtype=bfloat16: each key in the dtype LeRobot's PI0Policy gives it; the import reads those values."""
    out = str(tmp_path / "bf16")
    assert load_tool("export").main([f"--workdir={run}", f"--out={out}", "--format=lerobot", "--dtype=bfloat16"]) == 0
    with safe_open(os.path.join(out, lerobot.WEIGHTS_FILE), framework="pt") as f:
        dtypes = {k: f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {k: {"float32": "F32", "bfloat16": "BF16"}[lerobot.lerobot_dtype(k, "bfloat16")] for k in dtypes}
    assert _json(os.path.join(out, lerobot.CONFIG_FILE))["dtype"] == "bfloat16"
    back = str(tmp_path / "bf16_run")
    lerobot.import_folder(out, back)
    got, want = openpi.flatten(load_params(back).params["params"]), openpi.flatten(load_params(run).params["params"])
    bf16 = lambda x: torch.from_numpy(x).to(torch.bfloat16).float().numpy()  # noqa: E731
    assert np.array_equal(got["llm/layers/q_0/w"], bf16(want["llm/layers/q_0/w"]))
    assert np.array_equal(got["llm/final_norm_1/scale"], want["llm/final_norm_1/scale"])


def test_import_reads_lerobots_own_key_spellings(folder, run, tmp_path):
    """LeRobot's save keeps lm_head and drops the tied embed_tokens; older files lack the ``model.`` prefix and
    name pi0's time MLP ``time_mlp_*``: the import applies LeRobot's own fixes and gets the same parameters."""
    src = os.path.join(folder, lerobot.WEIGHTS_FILE)
    with safe_open(src, framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys() if k != lerobot.EMBED}, f.metadata()
    renamed = {k[len("model."):].replace("action_time_mlp_", "time_mlp_"): v for k, v in tensors.items()}
    other = tmp_path / "saved_by_lerobot"
    os.makedirs(other)
    for name in os.listdir(folder):
        if name != lerobot.WEIGHTS_FILE:
            os.symlink(os.path.join(folder, name), other / name)
    save_file(renamed, str(other / lerobot.WEIGHTS_FILE), metadata=metadata)
    out = str(tmp_path / "run")
    lerobot.import_folder(str(other), out)
    got, want = openpi.flatten(load_params(out).params["params"]), openpi.flatten(load_params(run).params["params"])
    assert all(np.array_equal(got[k], want[k]) for k in want)


# ----------------------------------------------------------------------------------------- the pi0.5 folder
QUANTILES = {"VISUAL": "IDENTITY", "STATE": "QUANTILES", "ACTION": "QUANTILES"}
PI05_NORMALIZER_FILES = ("policy_preprocessor_step_2_normalizer_processor.safetensors",
                         "policy_postprocessor_step_0_unnormalizer_processor.safetensors")


def _pi05_config(example: dict) -> dict:
    """The pi0 example's config.json as PI05Config writes it (configuration_pi05.py, LeRobot 0.4.4): type pi05,
    tokenizer_max_length (default 200) declared right after empty_cameras, state and action QUANTILES; the other
    fields are PI0Config's in the same order with the same defaults."""
    out = {}
    for key, value in example.items():
        if key != "tokenizer_max_length":
            out[key] = value
        if key == "empty_cameras":
            out["tokenizer_max_length"] = 200
    return out | {"type": "pi05", "normalization_mapping": QUANTILES}


def _pi05_processors(pre: dict, post: dict) -> tuple[dict, dict]:
    """The pi0 example's pipelines as make_pi05_pre_post_processors builds them (processor_pi05.py): rename,
    to-batch, normalizer (QUANTILES, its state file at index 2), pi05_prepare_state_tokenizer_processor_step (no
    saved config), tokenizer (max_length = tokenizer_max_length), device; unnormalizer (QUANTILES), device."""
    step = {s["registry_name"]: s for s in pre["steps"]}
    normalizer = step["normalizer_processor"]
    pre05 = [step["rename_observations_processor"], step["to_batch_processor"],
             {**normalizer, "config": {**normalizer["config"], "norm_map": QUANTILES},
              "state_file": PI05_NORMALIZER_FILES[0]},
             {"registry_name": "pi05_prepare_state_tokenizer_processor_step", "config": {}},
             {**step["tokenizer_processor"], "config": {**step["tokenizer_processor"]["config"], "max_length": 200}},
             step["device_processor"]]
    unnormalizer, device = post["steps"]
    post05 = [{**unnormalizer, "config": {**unnormalizer["config"], "norm_map": QUANTILES}}, device]
    return {**pre, "steps": pre05}, {**post, "steps": post05}


def test_pi05_folder_is_lerobots_pi05_layout(folder05, run05):
    """config.json and both pipelines equal, key order included, the pi0 example changed as LeRobot's pi0.5 source
    says (at the fixture's size: 3 cameras, 14-D, chunk 50; the Gemma variants 'dummy'). The normalizer files hold
    mean / std / q01 / q99 of state and action, the run's values in float32."""
    assert sorted(os.listdir(folder05)) == sorted([lerobot.WEIGHTS_FILE, lerobot.CONFIG_FILE, lerobot.PREPROCESSOR_FILE,
                                                   lerobot.POSTPROCESSOR_FILE, *PI05_NORMALIZER_FILES])
    config = _pi05_config(_json(os.path.join(EXAMPLE, lerobot.CONFIG_FILE)))
    config |= {"paligemma_variant": "dummy", "action_expert_variant": "dummy"}
    pre, post = _pi05_processors(_json(os.path.join(EXAMPLE, lerobot.PREPROCESSOR_FILE)),
                                 _json(os.path.join(EXAMPLE, lerobot.POSTPROCESSOR_FILE)))
    for name, want in ((lerobot.CONFIG_FILE, config), (lerobot.PREPROCESSOR_FILE, pre),
                       (lerobot.POSTPROCESSOR_FILE, post)):
        assert json.dumps(_json(os.path.join(folder05, name))) == json.dumps(want), name
    stats = load_params(run05).norm_stats["aloha"]
    for name in PI05_NORMALIZER_FILES:
        arrays = load_file(os.path.join(folder05, name))
        assert sorted(arrays) == sorted(f"{q}.{k}" for q in ("observation.state", "action")
                                        for k in ("mean", "std", "q01", "q99"))
        for key, value in arrays.items():
            quantity, stat = key.rsplit(".", 1)
            expected = stats["state" if quantity == "observation.state" else "action"][stat]
            assert value.dtype == np.float32 and np.array_equal(value, np.asarray(expected, np.float32)), key


def test_pi05_round_trip_is_bit_exact_in_float32(folder05, run05, tmp_path, capsys):
    """pi05 run -> --format=lerobot -> import_lerobot: 133 float32 keys (adaptive norms' dense, time_mlp_*, no
    state_proj), every parameter bit for bit, the pi05 preset with the run's sizes, chunk, prompt length, cameras,
    the statistics (float32) with bounds_q99 under --dataset."""
    with safe_open(os.path.join(folder05, lerobot.WEIGHTS_FILE), framework="pt") as f:
        keys = set(f.keys())
        assert len(keys) == 133 and {f.get_slice(k).get_dtype() for k in keys} == {"F32"}
    assert lerobot.DEC[1] + "norm.dense.weight" in keys and "model.time_mlp_in.bias" in keys
    assert not any("state_proj" in k or "action_time_mlp" in k for k in keys)
    out = str(tmp_path / "back")
    assert load_tool("import_lerobot").main([f"--folder={folder05}", f"--out={out}", "--dataset=aloha"]) == 0
    report = capsys.readouterr().out
    assert "47 vla_jax parameters from LeRobot's pi05 state_dict" in report and "bounds_q99" in report
    before, after = load_params(run05), load_params(out)
    got, want = openpi.flatten(after.params["params"]), openpi.flatten(before.params["params"])
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == np.float32 and got[name].tobytes() == want[name].tobytes(), name
    assert after.config["preset"] == "pi05" and after.config["data"]["prompt_format"] == "pi05"
    for key in ("action_expert", "action_horizon", "max_text_len", "max_state_dim", "num_cameras", "image_size", "vit",
                "llm", "expert", "openpi_semantics", "num_flow_steps"):
        assert after.config["model"][key] == before.config["model"][key], key
    stats = after.norm_stats["aloha"]
    assert (stats["state_normalization"], stats["action_normalization"]) == ("bounds_q99", "bounds_q99")
    for quantity in ("state", "action"):
        for stat in ("mean", "std", "q01", "q99"):
            assert stats[quantity][stat] == \
                np.asarray(before.norm_stats["aloha"][quantity][stat], np.float32).tolist()


def test_pi05_import_reads_lerobots_own_spellings_and_a_base_model(folder05, run05, tmp_path):
    """A pi0.5 file as LeRobot's save and older conversions write it (lm_head without embed_tokens, no model. prefix,
    action_time_mlp_*, a stray state_proj and expert norm weights PI05Policy drops) with a normalizer that carries no
    statistics (a base model's): the same parameters, no norm stats."""
    with safe_open(os.path.join(folder05, lerobot.WEIGHTS_FILE), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys() if k != lerobot.EMBED}, f.metadata()
    renamed = {k[len("model."):].replace("time_mlp_", "action_time_mlp_"): v for k, v in tensors.items()}
    renamed |= {"state_proj.weight": torch.zeros(3, 2),
                "paligemma_with_expert.gemma_expert.model.norm.weight": torch.zeros(64)}
    other = tmp_path / "saved_by_lerobot"
    os.makedirs(other)
    os.symlink(os.path.join(folder05, lerobot.CONFIG_FILE), other / lerobot.CONFIG_FILE)
    save_file(renamed, str(other / lerobot.WEIGHTS_FILE), metadata=metadata)
    pre = _json(os.path.join(folder05, lerobot.PREPROCESSOR_FILE))
    del pre["steps"][2]["state_file"]
    (other / lerobot.PREPROCESSOR_FILE).write_text(json.dumps(pre))
    out = str(tmp_path / "run")
    report = lerobot.import_folder(str(other), out)
    assert report.norm_stats.startswith("none")
    ck = load_params(out)
    got, want = openpi.flatten(ck.params["params"]), openpi.flatten(load_params(run05).params["params"])
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
    assert not ck.norm_stats


# ----------------------------------------------------------------------------------------- refusals
def _one_line_error(tool: str, argv: list[str], capsys) -> str:
    assert load_tool(tool).main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_import_refusals_are_one_line(folder, tmp_path, capsys):
    out = f"--out={tmp_path / 'run'}"
    assert "is not a directory" in _one_line_error("import_lerobot", [f"--folder={tmp_path / 'nowhere'}", out], capsys)
    not_pi0 = tmp_path / "act"
    os.makedirs(not_pi0)
    (not_pi0 / lerobot.CONFIG_FILE).write_text(json.dumps({"type": "act"}))
    err = _one_line_error("import_lerobot", [f"--folder={not_pi0}", out], capsys)
    assert "has type 'act'; only LeRobot's pi0 and pi05 import" in err
    with safe_open(os.path.join(folder, lerobot.WEIGHTS_FILE), framework="pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    for name, change, message in (
            ("extra", {"model.state_proj.scale": torch.zeros(3)},
             "LeRobot key model.state_proj.scale has no vla_jax pi0"),
            ("missing", {"model.action_out_proj.bias": None}, "LeRobot key model.action_out_proj.bias is missing"),
            ("untied", {lerobot.LM_HEAD: torch.zeros_like(tensors[lerobot.LM_HEAD])}, "differs from")):
        bad = tmp_path / name
        os.makedirs(bad)
        for file in os.listdir(folder):
            if file != lerobot.WEIGHTS_FILE:
                os.symlink(os.path.join(folder, file), bad / file)
        changed = {k: v for k, v in (tensors | change).items() if v is not None}
        save_file(changed, str(bad / lerobot.WEIGHTS_FILE), metadata=metadata)
        assert message in _one_line_error("import_lerobot", [f"--folder={bad}", out], capsys), name
    assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_export_refusals_are_one_line(fixture, run, tmp_path, capsys):
    """A run LeRobot's pi0 does not compute (openpi_semantics off), a bad dtype, a missing dataset: exit 2, one
    line, nothing written."""
    config = fixture.config()
    config.model.openpi_semantics = False
    other = str(tmp_path / "vla_semantics")
    write_checkpoint(other, openpi.to_vla_jax(fixture.params), config, load_params(run).norm_stats)
    args = ["--format=lerobot", f"--out={tmp_path / 'out'}"]
    err = _one_line_error("export", [f"--workdir={other}", *args], capsys)
    assert "not a LeRobot pi0 (openpi's pi0): preset 'pi0' has no openpi counterpart: config.model.openpi_semantics" \
        in err
    assert "--dtype=float16 must be one of float32, bfloat16" in _one_line_error(
        "export", [f"--workdir={run}", *args, "--dtype=float16"], capsys)
    assert "--dataset=bridge has no state and action norm stats (robot datasets: aloha)" in _one_line_error(
        "export", [f"--workdir={run}", *args, "--dataset=bridge"], capsys)
    assert not os.path.exists(tmp_path / "out")


def test_pi05_refusals_are_one_line(run05, folder05, tmp_path, capsys):
    """pi0.5 normalizes QUANTILES: a dataset without q01 / q99 (export: exit 2, one line, nothing written) or normalized
    otherwise than bounds_q99 is refused; so is a pi0.5 folder whose normalizer is not QUANTILES (import)."""
    ck = load_params(run05)
    stats = {"aloha": dict(ck.norm_stats["aloha"])}
    stats["aloha"]["state"] = {k: v for k, v in stats["aloha"]["state"].items() if k not in ("q01", "q99")}
    other = str(tmp_path / "no_quantiles")
    write_checkpoint(other, ck.params, openpi.Fixture.load(PI05).config(), stats)
    out = tmp_path / "out"
    err = _one_line_error("export", [f"--workdir={other}", f"--out={out}", "--format=lerobot"], capsys)
    assert "dataset 'aloha' state statistics lack q01, q99 (LeRobot's pi05 (QUANTILES) needs" in err
    assert not os.path.exists(out)
    with pytest.raises(lerobot.LerobotError, match=r"^dataset 'aloha' normalizes action with 'normal'; LeRobot's pi05 "
                                                   r"\(QUANTILES\) normalizes with 'bounds_q99' only$"):
        lerobot.normalizer_stats(ck.norm_stats["aloha"] | {"action_normalization": "normal"}, "aloha", "pi05")
    mean_std = tmp_path / "mean_std"
    os.makedirs(mean_std)
    for name in os.listdir(folder05):
        if name != lerobot.PREPROCESSOR_FILE:
            os.symlink(os.path.join(folder05, name), mean_std / name)
    pre = _json(os.path.join(folder05, lerobot.PREPROCESSOR_FILE))
    pre["steps"][2]["config"]["norm_map"]["STATE"] = "MEAN_STD"
    (mean_std / lerobot.PREPROCESSOR_FILE).write_text(json.dumps(pre))
    err = _one_line_error("import_lerobot", [f"--folder={mean_std}", f"--out={tmp_path / 'run'}"], capsys)
    assert "policy_preprocessor.json normalizes STATE with 'MEAN_STD'; the pi05 import reads QUANTILES" in err
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
