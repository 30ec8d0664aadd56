"""The model against a stored reference: parameters, a batch, the loss terms and sampled actions of the
debug preset (all its add-ons, both heads) and of a pi0-structured config, saved from the flat layout
(add-ons as model fields, their parameters inside the core's). Loaded through the rename table
(vla_jax/models/legacy.py), today's model must give the same numbers and use every stored parameter."""

import ast

import flax
import jax
import numpy as np
import pytest

from vla_jax.batch import OBSERVATION_KEYS
from vla_jax.config import load_config
from vla_jax.models import legacy, vla

FIXTURE = "tests/fixtures/model_reference.npz"
LEGACY_ADDONS = {  # the flat layout's fields of each case -> add-ons (legacy.upgrade_model_config)
    "debug": {"vit": {"stem": (8, 8, 8, 8), "keypoints": 4}, "readout": True, "location_grid": 8,
              "location_first_id": 4},
    "debug_discrete": {"vit": {"stem": (8, 8, 8, 8), "keypoints": 4}, "location_grid": 8, "location_first_id": 4},
    "pi0": {},
}


def _case(data, name):
    arg, overrides = ast.literal_eval(str(data[f"{name}/config"]))
    overrides = {k: v for k, v in overrides.items() if k not in ("model.vit.stem", "model.vit.keypoints")}
    overrides["model.openpi_semantics"] = False  # the stored numbers are vla_jax's own flow semantics
    config = load_config(f"configs/pretrain.py:{arg}", overrides)
    flat_model = {**config.model.to_dict(), **LEGACY_ADDONS[name]}
    flat_model["vit"] = {**config.model.vit.to_dict(), **LEGACY_ADDONS[name].get("vit", {})}
    flat_model.pop("addons")
    config.model.addons = legacy.upgrade_model_config(flat_model).get("addons", ())
    cfg = vla.make_config(config.model)

    def section(key):
        prefix = f"{name}/{key}/"
        return {k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)}

    old_params = section("params")
    params = {"params": legacy.upgrade_params(flax.traverse_util.unflatten_dict(old_params, sep="/"))}
    return cfg, vla.VLA(cfg), params, section("batch"), section("loss"), old_params


@pytest.fixture(scope="module")
def data():
    return np.load(FIXTURE)


@pytest.mark.parametrize("name", ["debug", "debug_discrete", "pi0"])
def test_same_numbers_as_the_stored_reference(data, name):
    cfg, model, params, batch, loss, old_params = _case(data, name)
    key = jax.random.key(0)
    shapes = jax.eval_shape(lambda b: model.init(key, b, key, method=vla.VLA.compute_loss), batch)
    expected = {"/".join(str(getattr(k, "key", k)) for k in path): leaf.value.shape
                for path, leaf in jax.tree_util.tree_leaves_with_path(shapes["params"], is_leaf=lambda x: hasattr(x, "value"))}
    got = {"/".join(path): v.shape for path, v in flax.traverse_util.flatten_dict(params["params"]).items()}
    assert got == expected  # every stored parameter maps to exactly one of the model's, same shapes
    assert len(old_params) == len(expected)

    terms = jax.jit(lambda p, b: model.apply(p, b, jax.random.key(1), method=vla.VLA.compute_loss))(params, batch)
    assert set(terms) == {k.split("/")[0] for k in loss} == set(cfg.loss_names)
    for k, (s, n) in terms.items():
        np.testing.assert_allclose(np.asarray(s), loss[f"{k}/sum"], atol=1e-6 * max(1.0, np.abs(loss[f"{k}/sum"]).max()))
        np.testing.assert_array_equal(np.asarray(n), loss[f"{k}/count"])
    obs = {k: batch[k] for k in OBSERVATION_KEYS}
    actions = jax.jit(lambda p, o: vla.sample(model, p, o, jax.random.key(2)))(params, obs)
    assert np.abs(np.asarray(actions) - data[f"{name}/actions"]).max() <= 1e-6
    if f"{name}/decoded" in data.files:
        decoded = jax.jit(lambda p, o: vla.greedy_decode(model, p, o, 4, actions_only=False))(params, obs)
        np.testing.assert_array_equal(np.asarray(decoded), data[f"{name}/decoded"])


def test_flat_layout_config_upgrades_to_the_debug_preset():
    """A training config saved by the flat layout (the debug preset's add-ons as model fields) rebuilds the same
    model as today's debug preset; a layout without them is pi0's."""
    config = load_config("configs/pretrain.py:debug")
    flat = {k: v for k, v in config.model.to_dict().items() if k != "addons"}
    flat.update(readout=True, location_grid=8, location_first_id=4)
    flat["vit"] = {**flat["vit"], "stem": [16, 32, 64, 128], "keypoints": 32}  # as JSON stores it
    assert legacy.is_flat(flat)
    config.model.addons = legacy.upgrade_model_config(flat)["addons"]
    assert vla.make_config(config.model) == vla.make_config(load_config("configs/pretrain.py:debug").model)
    assert legacy.upgrade_model_config({**flat, "readout": False, "location_grid": 0,
                                        "vit": {**flat["vit"], "stem": [], "keypoints": 0}})["addons"] == ()
    assert legacy.rename("img/stem/keypoint_query") == "keypoints/query"
    assert legacy.rename("img/blocks/qkv/w") == "img/blocks/qkv/w"  # the core's names stay
