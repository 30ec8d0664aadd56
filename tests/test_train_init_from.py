"""Initialising the backbone from a big_vision-format PaliGemma .npz."""

import flax.linen as nn
import jax
import numpy as np

from vla_jax.models.summary import param_shapes
from vla_jax.models.vla import VLA, make_config
from vla_jax.train import init_from
from vla_jax.train import sharding as sh
from vla_jax.train import state as st
from vla_jax.train import testing
from vla_jax.train.optimizer import make_optimizer


def write_paligemma_npz(path, cfg, vocab=257, fused_qkv=False, seed=0, scale=1.0) -> dict[str, np.ndarray]:
    """A PaliGemma-layout file for ``cfg.model`` (layers stacked). The token embedding has ``vocab``
    rows (a shape mismatch unless it equals the model's), ``encoder_norm/bias`` is missing and one
    name is unused."""
    m = cfg.model
    rng = np.random.default_rng(seed)
    r = lambda *shape: (scale * rng.normal(size=shape)).astype(np.float32)
    w, f, vd, p = m.vit.width, m.vit.mlp_dim, m.vit.depth, m.vit.patch_size
    heads, hd = m.vit.num_heads, m.vit.width // m.vit.num_heads
    d, ff, ld = m.llm.width, m.llm.mlp_dim, m.llm.depth
    n, k, h = m.llm.num_heads, m.llm.num_kv_heads, m.llm.head_dim
    blk = "params/img/Transformer/encoderblock/"
    mha = blk + "MultiHeadDotProductAttention_0/"
    arrays = {
        "params/img/embedding/kernel": r(p, p, 3, w), "params/img/embedding/bias": r(w),
        "params/img/pos_embedding": r(1, (m.image_size // p) ** 2, w),
        blk + "LayerNorm_0/scale": r(vd, w), blk + "LayerNorm_0/bias": r(vd, w),
        blk + "LayerNorm_1/scale": r(vd, w), blk + "LayerNorm_1/bias": r(vd, w),
        mha + "query/kernel": r(vd, w, heads, hd), mha + "key/kernel": r(vd, w, heads, hd),
        mha + "value/kernel": r(vd, w, heads, hd), mha + "query/bias": r(vd, heads, hd),
        mha + "key/bias": r(vd, heads, hd), mha + "value/bias": r(vd, heads, hd),
        mha + "out/kernel": r(vd, heads, hd, w), mha + "out/bias": r(vd, w),
        blk + "MlpBlock_0/Dense_0/kernel": r(vd, w, f), blk + "MlpBlock_0/Dense_0/bias": r(vd, f),
        blk + "MlpBlock_0/Dense_1/kernel": r(vd, f, w), blk + "MlpBlock_0/Dense_1/bias": r(vd, w),
        "params/img/Transformer/encoder_norm/scale": r(w),
        "params/img/head/kernel": r(w, d), "params/img/head/bias": r(d),
        "params/img/MAPHead_0/probe": r(1, 1, w),  # not part of our model
        "params/llm/embedder/input_embedding": r(vocab, d),
        "params/llm/layers/attn/attn_vec_einsum/w": r(ld, n, h, d),
        "params/llm/layers/mlp/gating_einsum": r(ld, 2, d, ff), "params/llm/layers/mlp/linear": r(ld, ff, d),
        "params/llm/layers/pre_attention_norm/scale": r(ld, d), "params/llm/layers/pre_ffw_norm/scale": r(ld, d),
        "params/llm/final_norm/scale": r(d),
    }
    if fused_qkv:
        arrays["params/llm/layers/attn/qkv_einsum/w"] = r(ld, 3, n, d, h)
    else:
        arrays["params/llm/layers/attn/q_einsum/w"] = r(ld, n, d, h)
        arrays["params/llm/layers/attn/kv_einsum/w"] = r(ld, 2, k, d, h)
    np.savez(path, **arrays)
    return arrays


def test_report_lists_loaded_fresh_mismatched_and_values_land(tmp_path):
    cfg = testing.tiny_config()
    arrays = write_paligemma_npz(tmp_path / "pg.npz", cfg)
    model = VLA(make_config(cfg.model))
    tx, _ = make_optimizer(cfg.optimizer, cfg.num_steps)
    mesh = sh.make_mesh({})
    abstract, _ = st.state_shardings(model, tx, mesh, sh.get_rules("fsdp"), 0, True)
    overrides, report = init_from.load_paligemma(str(tmp_path / "pg.npz"), abstract.params)

    loaded = dict(report.loaded)
    assert loaded["llm/layers/q_0/w"] == "llm/layers/attn/q_einsum/w"
    assert loaded["img_proj/w"] == "img/head/kernel"
    assert loaded["img/blocks/qkv/w"].endswith("MultiHeadDotProductAttention_0/{q,k,v}")
    assert len(report.loaded) == 26
    assert report.mismatched == [("llm/embedding", "llm/embedder/input_embedding", (300, 32), (257, 32))]
    fresh = set(report.fresh)
    assert "img/ln_final/bias" in fresh and "state_proj/w" in fresh and "action_out_proj/w" in fresh
    assert {"llm/layers/q_1/w", "llm/layers/gating_1/w", "llm/final_norm_1/scale"} <= fresh
    assert not fresh & set(loaded)
    n_params = len(jax.tree.leaves(abstract.params))
    assert len(report.loaded) + len(report.fresh) + len(report.mismatched) == n_params
    assert report.unused == ["img/MAPHead_0/probe"]
    text = report.format()
    assert text.splitlines()[0].startswith("init from npz: 26 loaded, ") and "MISMATCHED  llm/embedding" in text

    state, _ = st.create_train_state(model, tx, mesh, sh.get_rules("fsdp"), 0, True, param_overrides=overrides)
    p = jax.device_get(state.params)["params"]
    np.testing.assert_array_equal(p["llm"]["layers"]["q_0"]["w"],
                                  arrays["params/llm/layers/attn/q_einsum/w"].transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(p["llm"]["layers"]["kv_0"]["w"],
                                  arrays["params/llm/layers/attn/kv_einsum/w"].transpose(0, 1, 3, 2, 4))
    mha = "params/img/Transformer/encoderblock/MultiHeadDotProductAttention_0/"
    np.testing.assert_array_equal(p["img"]["blocks"]["qkv"]["w"][:, :, 1], arrays[mha + "key/kernel"])
    np.testing.assert_array_equal(p["img"]["blocks"]["qkv"]["b"][:, 2], arrays[mha + "value/bias"])
    np.testing.assert_array_equal(p["img_proj"]["w"], arrays["params/img/head/kernel"])
    np.testing.assert_array_equal(p["llm"]["final_norm_0"]["scale"], arrays["params/llm/final_norm/scale"])
    assert p["llm"]["embedding"].shape == (300, 32) and np.abs(p["llm"]["embedding"]).max() < 5  # fresh init
    ema = jax.device_get(state.ema_params)["params"]
    np.testing.assert_array_equal(ema["llm"]["layers"]["q_0"]["w"], p["llm"]["layers"]["q_0"]["w"])


def test_fused_qkv_and_unscanned_layers(tmp_path):
    cfg = testing.tiny_config(model__llm__num_kv_heads=2, model__scan_layers=False, model__vocab_size=257)
    arrays = write_paligemma_npz(tmp_path / "pg.npz", cfg, fused_qkv=True)
    abstract = nn.unbox(param_shapes(make_config(cfg.model)))
    overrides, report = init_from.load_paligemma(str(tmp_path / "pg.npz"), abstract)
    assert not report.mismatched, report.mismatched
    loaded = dict(report.loaded)
    assert loaded["llm/layer_1/q_0/w"] == "llm/layers/attn/qkv_einsum/w"
    assert loaded["img/block_0/mlp_in/w"] == "img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"
    qkv = arrays["params/llm/layers/attn/qkv_einsum/w"]
    np.testing.assert_array_equal(overrides["params/llm/layer_1/q_0/w"], qkv[1, 0].transpose(1, 0, 2))
    np.testing.assert_array_equal(overrides["params/llm/layer_0/kv_0/w"], qkv[0, 1:].transpose(0, 2, 1, 3))
    assert overrides["params/llm/embedding"].shape == (257, 32)
