"""The research add-ons (vla_jax/models/addons/): each one through the core's hooks, its parameters under its
own subtree, its config checks, and what it changes (and what it leaves alone)."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vla_jax.batch import random_batch
from vla_jax.config import ConfigError
from vla_jax.models import addons, vla
from vla_jax.models.addons.keypoints import spatial_softmax
from vla_jax.models.addons.location_tokens import location_weights

from test_model import init, loss_terms, make

STEM = "conv_stem(channels=(16, 32, 64, 128))"
LOCATIONS = "location_tokens(grid=8, first_id=4)"


def _init(model, cfg, batch_size=2):
    key = jax.random.key(0)
    batch = random_batch(cfg, batch_size, seed=0)
    return jax.jit(lambda b: model.init(key, b, key, method=vla.VLA.compute_loss))(batch), batch


def _tokens(model, params, batch):
    return np.asarray(model.apply(params, batch, method=vla.VLA.embed_prefix).tokens)


def test_pi0_core_names_no_addon():
    """The core model file is the paper: none of the add-ons' names appear in it."""
    text = open(vla.__file__).read().lower()
    for word in ("keypoint", "location", "readout", "stem"):
        assert word not in text, word
    cfg, _ = make("pi0")
    assert cfg.addons == () and cfg.loss_names == ("flow", "text")


def test_addon_config_errors_are_one_line():
    with pytest.raises(ConfigError, match=r"unknown add-on 'fly' in config\.model\.addons"):
        make(addons=("fly",))
    with pytest.raises(ConfigError, match=r"config\.model\.addons=\(1,\) must be a tuple of strings"):
        make(addons=(1,))
    with pytest.raises(ConfigError, match=r"bad arguments for 'keypoints'.*it takes \['num'\]"):
        make(addons=(STEM, "keypoints(count=3)"))
    with pytest.raises(ConfigError, match=r"'conv_stem' is listed twice"):
        make(addons=(STEM, STEM))
    with pytest.raises(ConfigError, match=r"cannot parse 'conv_stem\(' in config\.model\.addons"):
        make(addons=("conv_stem(",))
    with pytest.raises(ValueError, match=r"keypoints needs conv_stem before it"):
        make(addons=("keypoints(num=4)",))
    with pytest.raises(ValueError, match=r"prefix_readout needs config\.model\.action_head='flow'"):
        make("debug,head=discrete", addons=("prefix_readout",))


def test_addon_parameters_live_in_their_own_subtree():
    cfg, _ = make()
    assert [a.name for a in cfg.addons] == ["conv_stem", "location_tokens", "keypoints", "prefix_readout"]
    from vla_jax.models import summary

    shapes = nn.unbox(summary.param_shapes(cfg))["params"]
    assert {"conv_stem", "keypoints", "prefix_readout"} <= set(shapes)
    assert "location_tokens" not in shapes  # it ties the backbone's token embedding, no weights of its own
    assert shapes["keypoints"]["readout"]["w"].shape == (cfg.num_cameras * 32 * 2, cfg.decoder.experts[0].width)
    counts = summary.count_by_component(summary.param_shapes(cfg))
    assert counts["add-ons"] == sum(int(np.prod(v.shape)) for k in ("conv_stem", "keypoints", "prefix_readout")
                                    for v in jax.tree_util.tree_leaves(shapes[k]))


def test_conv_stem_keeps_the_token_grid():
    plain, _ = make(addons=())
    cfg, model = make(addons=("conv_stem(channels=(8, 16))",))  # 64 px -> 16 px of 16 channels -> 4 x 4 patches
    assert cfg.vit.num_patches == plain.vit.num_patches and cfg.vit.pixel_size == 16
    params, batch = _init(model, cfg)
    tree = nn.unbox(params)["params"]
    assert tree["conv_stem"]["conv_1_w"].shape == (3, 3, 8, 16)
    assert tree["img"]["embedding"]["w"].shape == (4, 4, 16, cfg.vit.width)
    tokens = _tokens(model, params, batch)
    assert tokens.shape[1] == cfg.num_cameras * plain.vit.num_patches + cfg.max_text_len
    images = np.array(batch["images"])
    images[:, 0, :8, :8] = 1.0  # a white corner inside the first patch of camera 0
    changed = np.abs(_tokens(model, params, {**batch, "images": images}) - tokens).max(-1)[0]
    assert changed[0] > 1e-3 and changed[1:16].max() > 1e-3  # attention spreads it to the other patches
    with pytest.raises(ValueError, match=r"conv_stem\(channels=\(8, 8, 8, 8, 8\)\): 5 stride-2 convolutions need"):
        make(addons=("conv_stem(channels=(8, 8, 8, 8, 8))",))  # 32x downsampling does not divide the 16 px patches


def test_spatial_softmax():
    heat = np.full((1, 4, 8, 2), -1e4, np.float32)
    heat[0, 1, 6, 0] = heat[0, 3, 0, 1] = 0.0  # map 0 peaks at row 1, column 6; map 1 at row 3, column 0
    xy = np.asarray(spatial_softmax(jnp.asarray(heat)))
    cols, rows = np.linspace(-1, 1, 8), np.linspace(-1, 1, 4)
    np.testing.assert_allclose(xy[0], [[cols[6], rows[1]], [cols[0], rows[3]]], atol=1e-6)


def test_keypoints_start_as_a_no_op_and_read_the_prompt_not_the_answer():
    cfg, model, params, batch = init(tiny=False)
    assert addons.has(cfg, "keypoints")
    _, without = make(addons=(STEM, LOCATIONS, "prefix_readout"))
    shared = {"params": {k: v for k, v in nn.unbox(params)["params"].items() if k != "keypoints"}}
    n_img = cfg.num_cameras * cfg.vit.num_patches
    # zero-initialized query and projections: a model loaded without keypoints starts unchanged
    np.testing.assert_allclose(_tokens(model, params, batch), _tokens(without, shared, batch), atol=1e-5)

    flat = flax.traverse_util.flatten_dict(nn.unbox(params), sep="/")
    rng = np.random.default_rng(0)
    for key in [k for k in flat if k.startswith("params/keypoints/")]:
        flat[key] = rng.normal(0.0, 0.5, np.shape(flat[key])).astype(np.float32)
    params = flax.traverse_util.unflatten_dict(flat, sep="/")
    base = _tokens(model, params, batch)[:, :n_img]
    assert np.abs(base - _tokens(without, shared, batch)[:, :n_img]).max() > 1e-2
    answer = np.asarray(batch["token_mask"] & batch["token_ar"])
    prompt = np.asarray(batch["token_mask"] & ~batch["token_ar"])
    assert answer.any() and prompt.any()
    other = np.where(answer, (np.asarray(batch["tokens"]) + 7) % cfg.decoder.vocab_size, batch["tokens"])
    np.testing.assert_array_equal(_tokens(model, params, {**batch, "tokens": other})[:, :n_img], base)
    other = np.where(prompt, (np.asarray(batch["tokens"]) + 7) % cfg.decoder.vocab_size, batch["tokens"])
    assert np.abs(_tokens(model, params, {**batch, "tokens": other})[:, :n_img] - base).max() > 1e-3


def test_keypoint_loss_targets_the_named_cell():
    cfg, model, params, batch = init(tiny=False)
    g, first = 8, 4  # the debug preset's location tokens
    answer = np.asarray(batch["token_mask"] & batch["token_ar"])
    rows = np.flatnonzero(answer.any(1))
    assert rows.size >= 1
    tokens = np.where(answer, first + g * g + 1, np.asarray(batch["tokens"]))  # answers of ordinary words
    i = rows[0]
    tokens[i, np.flatnonzero(answer[i])[0]] = first + 2 * g + 5  # <loc25>: row 2, column 5
    b = {**batch, "tokens": tokens}
    terms = model.apply(params, b, jax.random.key(0), method=vla.VLA.compute_loss)
    sums, counts = (np.asarray(x) for x in terms["keypoint"])
    points = np.asarray(model.apply(params, b, method=vla.VLA.embed_prefix).extras["keypoints"])
    want = np.square(points[i, 0, 0] - [(5.5 / g) * 2 - 1, (2.5 / g) * 2 - 1]).sum()
    assert counts[i] == 1.0 and np.isclose(sums[i], want, rtol=1e-5)
    # examples without a location answer add nothing
    assert counts.sum() == 1.0 and np.all(sums[counts == 0] == 0)
    # without location tokens there is no target: no keypoint loss
    no_loc, _ = make(addons=(STEM, "keypoints(num=4)"))
    assert "keypoint" not in no_loc.loss_names


def test_readout_joins_the_state_token_only():
    cfg, model, params, batch = init(tiny=False)
    assert addons.has(cfg, "prefix_readout")  # the debug preset
    _, plain = make(addons=(STEM, LOCATIONS, "keypoints(num=32)"))
    zeroed = jax.tree_util.tree_map(np.array, nn.unbox(params))
    for leaf in ("w", "b"):
        zeroed["params"]["prefix_readout"]["proj"][leaf][...] = 0.0
    without = {"params": {k: v for k, v in zeroed["params"].items() if k != "prefix_readout"}}
    without["params"]["keypoints"] = {k: v for k, v in without["params"]["keypoints"].items() if k != "readout"}
    a = loss_terms(model, zeroed, batch)
    b = loss_terms(plain, without, batch)
    np.testing.assert_allclose(a["flow"][0], b["flow"][0], rtol=1e-5)  # zero readout: exactly pi0's suffix
    c = loss_terms(model, params, batch)
    assert np.abs(np.asarray(c["flow"][0]) - np.asarray(a["flow"][0])).max() > 1e-4  # the readout is used


def test_location_weights_map_cells_to_image_tokens():
    coarse = location_weights(4, 8)  # the debug preset: 4 x 4 tokens, 8 x 8 cells, 2 x 2 cells per token
    assert coarse.shape == (16, 64)
    np.testing.assert_allclose(coarse.sum(axis=1), 1.0)
    assert set(np.flatnonzero(coarse[5])) == {18, 19, 26, 27}  # token (1, 1) holds cells (2..3, 2..3)
    np.testing.assert_array_equal(location_weights(8, 8), np.eye(64, dtype=np.float32))


def test_location_tokens_join_camera_0_only():
    cfg, model, params, batch = init(tiny=False)
    assert addons.has(cfg, "location_tokens")
    _, plain = make(addons=(STEM, "keypoints(num=32)", "prefix_readout"))
    tokens = _tokens(model, params, batch)
    base = _tokens(plain, params, batch)  # the same parameters: no new ones
    n = tokens.shape[1] - cfg.max_text_len
    per_cam = n // cfg.num_cameras
    emb = nn.unbox(params)["params"]["llm"]["embedding"][4:68] * np.sqrt(cfg.decoder.experts[0].width)
    want = location_weights(int(per_cam**0.5), 8) @ np.asarray(emb)
    np.testing.assert_allclose(tokens[:, :per_cam] - base[:, :per_cam], np.broadcast_to(want, (4, *want.shape)),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(tokens[:, per_cam:], base[:, per_cam:])  # other cameras and text: untouched
    with pytest.raises(ValueError, match=r"location tokens must lie inside the vocabulary"):
        make(addons=("location_tokens(grid=8, first_id=1000)",))
    assert addons.required_tokens(load_model_config())["<loc25>"] == 4 + 2 * 8 + 5


def load_model_config():
    from vla_jax.config import load_config

    return load_config("configs/pretrain.py:debug").model
