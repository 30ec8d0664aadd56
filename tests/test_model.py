"""The VLA model: shapes, masks, losses, KV-cached sampling, determinism, bad input."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vla_jax.batch import OBSERVATION_KEYS, random_batch
from vla_jax.config import ConfigError, load_config
from vla_jax.models import action_tokens, summary, vla

CONFIG = "configs/pretrain.py"


def make(arg="debug", **model_overrides):
    config = load_config(f"{CONFIG}:{arg}", {f"model.{k}": v for k, v in model_overrides.items()})
    cfg = vla.make_config(config.model)
    return cfg, vla.VLA(cfg)


@functools.lru_cache(maxsize=None)
def init(arg="debug"):
    cfg, model = make(arg)
    batch = random_batch(cfg, 4, seed=0)
    key = jax.random.key(0)
    params = jax.jit(lambda b: model.init(key, b, key, method=vla.VLA.compute_loss))(batch)
    return cfg, model, params, batch


@functools.partial(jax.jit, static_argnums=0)
def _loss_terms(model, params, batch, rng):
    return model.apply(params, batch, rng, method=vla.VLA.compute_loss)


def loss_terms(model, params, batch, seed=1):
    return _loss_terms(model, params, batch, jax.random.key(seed))


def mean_loss(terms, name):
    s, n = terms[name]
    return float(s.sum() / jnp.maximum(n.sum(), 1))


@pytest.mark.parametrize("arg", ["debug", "small", "pi0", "debug,head=discrete", "pi0,head=discrete"])
def test_shapes_every_preset(arg):
    cfg, model = make(arg)
    batch = summary.dummy_batch(cfg, batch_size=2)
    params = summary.param_shapes(cfg)
    terms = jax.eval_shape(lambda p, b: model.apply(p, b, jax.random.key(0), method=vla.VLA.compute_loss),
                           params, batch)
    head = "flow" if cfg.action_head == "flow" else "discrete"
    assert set(terms) == {head, "text"} | ({"keypoint"} if cfg.vit.keypoints and cfg.location_grid else set())
    assert terms[head][0].shape == (2,) and terms["text"][1].shape == (2,)
    if cfg.action_head == "flow":
        acts = jax.eval_shape(lambda p, b: vla.sample(model, p, b, jax.random.key(0)), params, batch)
        assert acts.shape == (2, cfg.action_horizon, cfg.max_action_dim)
        kv = jax.eval_shape(lambda p, b: model.apply(p, b, method=vla.VLA.encode_prefix), params, batch)[0]
        prefix_len = cfg.num_cameras * cfg.vit.num_patches + cfg.max_text_len
        assert kv[0].shape == (cfg.decoder.depth, 2, prefix_len, cfg.decoder.num_kv_heads, cfg.decoder.head_dim)


def test_conv_stem_keeps_the_token_grid():
    plain, _ = make()
    cfg, model = make(**{"vit.stem": (8, 16)})  # 64 px -> 16 px of 16 channels -> 4 x 4 patches
    assert cfg.vit.stem == (8, 16) and cfg.vit.num_patches == plain.vit.num_patches
    shapes = nn.unbox(summary.param_shapes(cfg))["params"]["img"]
    assert shapes["stem"]["conv_1_w"].shape == (3, 3, 8, 16)
    assert shapes["embedding"]["w"].shape == (4, 4, 16, cfg.vit.width)
    batch = random_batch(cfg, 2, seed=0)
    key = jax.random.key(0)
    params = jax.jit(lambda b: model.init(key, b, key, method=vla.VLA.compute_loss))(batch)
    tokens = model.apply(params, batch, method=vla.VLA.embed_prefix)[0]
    assert tokens.shape[1] == cfg.num_cameras * plain.vit.num_patches + cfg.max_text_len
    images = np.array(batch["images"])
    images[:, 0, :8, :8] = 1.0  # a white corner inside the first patch of camera 0
    changed = np.abs(np.asarray(model.apply(params, {**batch, "images": images}, method=vla.VLA.embed_prefix)[0]
                                - tokens)).max(-1)[0]
    assert changed[0] > 1e-3 and changed[1:16].max() > 1e-3  # attention spreads it to the other patches
    with pytest.raises(ValueError, match=r"config\.model\.vit\.stem=\(8, 8, 8, 8, 8\)"):
        make(**{"vit.stem": (8, 8, 8, 8, 8)})  # 32x downsampling does not divide the 16 px patches


def test_spatial_softmax_keypoints():
    import dataclasses

    from vla_jax.models.vit import ViT, ViTConfig, spatial_softmax

    heat = np.full((1, 4, 8, 2), -1e4, np.float32)
    heat[0, 1, 6, 0] = heat[0, 3, 0, 1] = 0.0  # map 0 peaks at row 1, column 6; map 1 at row 3, column 0
    xy = np.asarray(spatial_softmax(jnp.asarray(heat)))
    cols, rows = np.linspace(-1, 1, 8), np.linspace(-1, 1, 4)
    np.testing.assert_allclose(xy[0], [[cols[6], rows[1]], [cols[0], rows[3]]], atol=1e-6)

    cfg = ViTConfig(width=32, depth=1, mlp_dim=64, num_heads=2, patch_size=16, image_size=32, stem=(8, 8, 8, 8),
                    keypoints=4)
    images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1.0, maxval=1.0)
    params = nn.unbox(ViT(cfg).init(jax.random.key(0), images))
    assert params["params"]["stem"]["keypoint_conv_w"].shape == (3, 3, 8, 4)  # from the stride-4 features
    out, points = ViT(cfg).apply(params, images)
    assert points.shape == (2, 4, 2) and np.abs(np.asarray(points)).max() <= 1.0
    # the zero-initialized projection makes the keypoints a no-op at first: a model loaded without them is unchanged
    plain = dataclasses.replace(cfg, keypoints=0)
    shared = {"params": {k: v for k, v in params["params"].items() if k != "keypoint_proj"}}
    shared["params"]["stem"] = {k: v for k, v in shared["params"]["stem"].items() if "keypoint" not in k}
    np.testing.assert_allclose(ViT(plain).apply(shared, images)[0], out, atol=1e-6)
    proj = params["params"]["keypoint_proj"]
    params["params"]["keypoint_proj"] = {**proj, "w": jax.random.normal(jax.random.key(2), proj["w"].shape)}
    assert np.abs(np.asarray(ViT(cfg).apply(params, images)[0] - out)).max() > 1e-2
    # conditioned on an instruction vector: zero-initialized filters first, then a different vector -> other output
    cond = jax.random.normal(jax.random.key(3), (2, 16))
    cparams = nn.unbox(ViT(cfg).init(jax.random.key(0), images, cond))
    assert cparams["params"]["stem"]["keypoint_query"].shape == (16, 8, 4)
    cparams["params"]["keypoint_proj"] = params["params"]["keypoint_proj"]
    before = ViT(cfg).apply(cparams, images, cond)[0]
    q = cparams["params"]["stem"]["keypoint_query"]
    cparams["params"]["stem"]["keypoint_query"] = jax.random.normal(jax.random.key(4), q.shape)
    after = ViT(cfg).apply(cparams, images, cond)[0]
    assert np.abs(np.asarray(after - before)).max() > 1e-2
    assert np.abs(np.asarray(ViT(cfg).apply(cparams, images, -cond)[0] - after)).max() > 1e-2
    with pytest.raises(ValueError, match=r"config\.model\.vit\.keypoints=4 needs >= 2 stem"):
        make(**{"vit.stem": (16,), "vit.keypoints": 4})


def test_sampler_averages_independent_flow_samples():
    from vla_jax.eval.policies import make_sampler

    cfg, model, params, batch = init()
    obs = {k: batch[k] for k in OBSERVATION_KEYS}
    key = jax.random.fold_in(jax.random.PRNGKey(3), 0)  # the sampler's first call
    single = make_sampler(model, params, seed=3)(obs)
    np.testing.assert_allclose(single, vla.sample(model, params, obs, key), atol=1e-6)
    mean = make_sampler(model, params, seed=3, num_samples=3)(obs)
    parts = [vla.sample(model, params, obs, k) for k in jax.random.split(key, 3)]
    np.testing.assert_allclose(mean, np.mean(parts, axis=0), atol=1e-5)
    assert np.abs(np.asarray(parts[0]) - np.asarray(parts[1])).max() > 1e-2  # the samples differ: a real average
    with pytest.raises(ValueError, match="num_samples=0"):
        make_sampler(model, params, num_samples=0)


def test_keypoints_read_the_prompt_not_the_answer():
    """The instruction conditions the image tokens (keypoints); answer tokens (grounding targets) must not."""
    import flax

    cfg, model, params, batch = init()
    assert cfg.vit.keypoints
    flat = flax.traverse_util.flatten_dict(nn.unbox(params), sep="/")
    rng = np.random.default_rng(0)
    for key in [k for k in flat if "keypoint" in k]:
        flat[key] = rng.normal(0.0, 0.5, np.shape(flat[key])).astype(np.float32)
    params = flax.traverse_util.unflatten_dict(flat, sep="/")
    n_img = cfg.num_cameras * cfg.vit.num_patches

    def image_tokens(b):
        return np.asarray(model.apply(params, b, method=vla.VLA.embed_prefix)[0][:, :n_img])

    base = image_tokens(batch)
    answer = np.asarray(batch["token_mask"] & batch["token_ar"])
    prompt = np.asarray(batch["token_mask"] & ~batch["token_ar"])
    assert answer.any() and prompt.any()
    other = np.where(answer, (np.asarray(batch["tokens"]) + 7) % cfg.decoder.vocab_size, batch["tokens"])
    np.testing.assert_array_equal(image_tokens({**batch, "tokens": other}), base)
    other = np.where(prompt, (np.asarray(batch["tokens"]) + 7) % cfg.decoder.vocab_size, batch["tokens"])
    assert np.abs(image_tokens({**batch, "tokens": other}) - base).max() > 1e-3


def test_keypoint_loss_targets_the_named_cell():
    cfg, model, params, batch = init()
    g, first = cfg.location_grid, cfg.location_first_id
    answer = np.asarray(batch["token_mask"] & batch["token_ar"])
    rows = np.flatnonzero(answer.any(1))
    assert rows.size >= 1
    tokens = np.where(answer, first + g * g + 1, np.asarray(batch["tokens"]))  # answers of ordinary words
    i = rows[0]
    tokens[i, np.flatnonzero(answer[i])[0]] = first + 2 * g + 5  # <loc25>: row 2, column 5
    b = {**batch, "tokens": tokens}
    terms = model.apply(params, b, jax.random.key(0), method=vla.VLA.compute_loss)
    sums, counts = (np.asarray(x) for x in terms["keypoint"])
    points = np.asarray(model.apply(params, b, method=vla.VLA.embed_prefix)[3])
    want = np.square(points[i, 0, 0] - [(5.5 / g) * 2 - 1, (2.5 / g) * 2 - 1]).sum()
    assert counts[i] == 1.0 and np.isclose(sums[i], want, rtol=1e-5)
    # examples without a location answer add nothing
    assert counts.sum() == 1.0 and np.all(sums[counts == 0] == 0)


def test_sincos2d_position_embedding_init():
    from vla_jax.models.vit import posemb_sincos2d

    cfg, model = make()
    assert cfg.vit.posemb_init == "sincos2d"  # the debug preset trains from scratch
    params = jax.jit(lambda b: model.init(jax.random.key(0), b, jax.random.key(0), method=vla.VLA.compute_loss))(
        random_batch(cfg, 2, seed=0))
    pos = np.asarray(nn.unbox(params)["params"]["img"]["pos_embedding"])
    np.testing.assert_allclose(pos, posemb_sincos2d(None, pos.shape), atol=1e-6)
    assert 0.6 < np.sqrt(np.mean(pos**2)) < 0.8  # as large as the patch embeddings, not 0.02
    grid = int(np.sqrt(pos.shape[1]))
    half = cfg.vit.width // 2  # first half: the column (x), second half: the row (y)
    np.testing.assert_array_equal(pos[0, 1, :half], pos[0, grid + 1, :half])  # same column
    np.testing.assert_array_equal(pos[0, grid, half:], pos[0, grid + 1, half:])  # same row
    assert np.abs(pos[0, 1] - pos[0, grid]).max() > 0.5  # (row 0, col 1) and (row 1, col 0) differ
    with pytest.raises(ValueError, match="posemb_init"):
        make(**{"vit.posemb_init": "rope"})
    with pytest.raises(ValueError, match=r"posemb_init='sincos2d' needs config\.model\.vit\.width=130 divisible by 4"):
        make(**{"vit.width": 130})


def test_pi0_parameter_count_matches_published_dims():
    cfg, _ = make("pi0")
    table, measured, derived = summary.summary_table(cfg)
    print(table)
    assert measured == derived == 3_238_048_528  # openpi's pi0 (../shared/fixtures/openpi/openpi_param_names_pi0.txt)
    counts = summary.count_by_component(summary.param_shapes(cfg))
    assert 0.38e9 < counts["vision encoder"] < 0.45e9  # SigLIP So400m
    assert 0.28e9 < counts["action expert layers"] < 0.34e9  # Gemma 300M


def test_prefix_outputs_ignore_suffix():
    cfg, model, params, batch = init()

    def prefix_out(p, b, x_t):
        def fn(m, b, x_t):
            p_tok, p_mask, p_ar, _ = m.embed_prefix(b)
            readout = jnp.zeros((x_t.shape[0], cfg.decoder.experts[0].width))
            s_tok, s_mask, s_ar = m.embed_suffix(b["state"], x_t, jnp.full((x_t.shape[0],), 0.5), readout)
            mask = jnp.concatenate([p_mask, s_mask], 1)
            ar = jnp.concatenate([p_ar, s_ar], 1)
            (p_out, s_out), _ = m.llm([p_tok, s_tok], jnp.cumsum(mask, 1) - 1, vla.make_attn_mask(mask, ar))
            return p_out, s_out, p_mask
        return model.apply(p, b, x_t, method=fn)

    x1 = np.zeros(batch["actions"].shape, np.float32)
    x2 = np.random.default_rng(0).normal(size=x1.shape).astype(np.float32)
    p1, s1, real = jax.jit(prefix_out)(params, batch, x1)
    p2, s2, _ = jax.jit(prefix_out)(params, batch, x2)
    real = np.asarray(real)  # outputs at padding positions are never read
    np.testing.assert_array_equal(np.asarray(p1)[real], np.asarray(p2)[real])
    assert np.abs(np.asarray(s1) - np.asarray(s2)).max() > 1e-3  # the suffix itself does change


def test_attention_mask_structure():
    prefix, suffix_h = 3, 2
    mask = jnp.ones((1, prefix + 1 + suffix_h), bool)
    ar = jnp.array([[0, 0, 0, 1, 1, 0]], bool)
    m = np.asarray(vla.make_attn_mask(mask, ar))[0]
    assert m[:prefix, :prefix].all() and not m[:prefix, prefix:].any()  # bidirectional prefix, blind to suffix
    assert m[prefix, : prefix + 1].all() and not m[prefix, prefix + 1:].any()  # state: prefix + itself
    assert m[prefix + 1:].all()  # actions: everything before and each other


def test_padding_content_does_not_change_loss():
    cfg, model, params, batch = init()
    rng = np.random.default_rng(5)
    noisy = {k: v.copy() for k, v in batch.items()}
    noisy["images"] = np.where(batch["image_mask"][:, :, None, None, None], batch["images"],
                               rng.uniform(-1, 1, batch["images"].shape)).astype(np.float32)
    noisy["actions"] = np.where(batch["action_dim_mask"][:, None, :], batch["actions"],
                                rng.normal(size=batch["actions"].shape)).astype(np.float32)
    noisy["state"] = np.where(batch["state_mask"], batch["state"], rng.normal(size=batch["state"].shape)).astype(np.float32)
    noisy["tokens"] = np.where(batch["token_mask"], batch["tokens"], rng.integers(1, 200, batch["tokens"].shape)).astype(np.int32)
    for name in ("flow", "text"):
        np.testing.assert_allclose(mean_loss(loss_terms(model, params, batch), name),
                                   mean_loss(loss_terms(model, params, noisy), name), rtol=1e-5)
    # ...while changing a real camera does change it.
    real = {**batch, "images": np.ascontiguousarray(batch["images"][:, :, ::-1])}  # upside down
    assert abs(mean_loss(loss_terms(model, params, real), "flow") - mean_loss(loss_terms(model, params, batch), "flow")) > 1e-4


@pytest.mark.parametrize("head", ["flow", "discrete"])
def test_loss_decreases_on_fixed_batch(head):
    cfg, model = make(f"debug,head={head}", image_size=32, num_cameras=2, action_horizon=4)
    batch = random_batch(cfg, 4, seed=3)
    key = jax.random.key(0)
    params = model.init(key, batch, key, method=vla.VLA.compute_loss)
    tx = optax.adam(1e-3)
    opt = tx.init(params)

    def loss_fn(p):
        terms = model.apply(p, batch, jax.random.key(7), method=vla.VLA.compute_loss)
        return sum(s.sum() / jnp.maximum(n.sum(), 1) for s, n in terms.values())

    @jax.jit
    def step(p, o):
        loss, g = jax.value_and_grad(loss_fn)(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    losses = []
    for _ in range(50):
        params, opt, loss = step(params, opt)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses[::10]


def test_kv_cached_sampling_equals_naive():
    cfg, model, params, batch = init()
    noise = jax.random.normal(jax.random.key(3), batch["actions"].shape)
    cached = jax.jit(lambda p, o, n: vla.sample_actions(model, p, o, n))(params, batch, noise)
    naive = jax.jit(lambda p, o, n: vla.sample_actions_naive(model, p, o, n))(params, batch, noise)
    assert np.abs(np.asarray(cached) - np.asarray(naive)).max() <= 1e-5
    assert np.all(np.asarray(cached)[~batch["action_dim_mask"][:, None, :].repeat(cfg.action_horizon, 1)] == 0)


def test_discrete_decoding_matches_teacher_forcing():
    cfg, model = make("debug,head=discrete", action_horizon=2)
    batch = random_batch(cfg, 2, seed=1, web_fraction=0.0)
    obs = {**batch, "token_ar": np.zeros_like(batch["token_ar"]), "token_loss": np.zeros_like(batch["token_loss"])}
    key = jax.random.key(0)
    params = model.init(key, batch, key, method=vla.VLA.compute_loss)
    actions = jax.jit(lambda p, o: vla.sample_actions_discrete(model, p, o))(params, obs)
    # Feeding the decoded actions back as targets, the full (uncached) forward must predict each of
    # them as the argmax over the action ids: the cached decoder and the training graph agree.
    teacher = {**batch, "actions": np.asarray(actions), "action_step_mask": np.ones_like(batch["action_step_mask"])}

    def fn(m, b):
        inp = m.discrete_inputs(b)
        p_tok, p_mask, p_ar, _ = m.embed_prefix(inp)
        (out,), _ = m.llm([p_tok], jnp.cumsum(p_mask, 1) - 1, vla.make_attn_mask(p_mask, p_ar))
        logits = m.llm.logits(out[:, -inp["tokens"].shape[1]:])
        pred = cfg.decoder.vocab_size - 256 + jnp.argmax(logits[..., -256:], -1)
        return pred[:, :-1], inp["tokens"][:, 1:], inp["is_action"][:, 1:]

    pred, target, is_action = jax.jit(lambda p, b: model.apply(p, b, method=fn))(params, teacher)
    is_action = np.asarray(is_action)
    assert is_action.sum() == int(batch["action_dim_mask"].sum()) * cfg.action_horizon
    np.testing.assert_array_equal(np.asarray(pred)[is_action], np.asarray(target)[is_action])


def test_action_token_round_trip_within_bin_width():
    x = jnp.linspace(-1, 1, 10_001)
    tokens = action_tokens.encode(x, 1024)
    assert int(tokens.min()) >= 1024 - 256 and int(tokens.max()) <= 1023
    assert float(jnp.abs(action_tokens.decode(tokens, 1024) - x).max()) <= action_tokens.BIN_WIDTH / 2 + 1e-6
    assert bool(action_tokens.is_action_token(tokens, 1024).all())


def test_deterministic_for_fixed_seed():
    cfg, model = make()
    batch = random_batch(cfg, 2, seed=0)
    key = jax.random.key(42)
    run = jax.jit(lambda b: vla.sample(model, model.init(key, b, key, method=vla.VLA.compute_loss), b, key))
    np.testing.assert_array_equal(np.asarray(run(batch)), np.asarray(run(batch)))


def test_bad_inputs_raise_one_clear_line():
    cfg, model, params, batch = init()
    wrong_size = {**batch, "images": batch["images"][:, :, :32, :32]}
    with pytest.raises(ValueError, match=r"config\.model\.image_size"):
        loss_terms(model, params, wrong_size)
    too_wide = {**batch, "actions": np.zeros((4, cfg.action_horizon, cfg.max_action_dim + 3), np.float32)}
    with pytest.raises(ValueError, match=r"config\.model\.max_action_dim"):
        loss_terms(model, params, too_wide)
    with pytest.raises(ConfigError, match="unknown preset size='huge'"):
        load_config(f"{CONFIG}:huge")
    with pytest.raises(ConfigError, match="unknown config key 'config.model.llm.dept'"):
        load_config(f"{CONFIG}:debug", {"model.llm.dept": 3})
    with pytest.raises(ValueError, match=r"config\.model\.image_size=60 must be divisible"):
        make(image_size=60)
    with pytest.raises(ValueError, match=r"config\.model\.action_head='bins'"):
        make(action_head="bins")


def _with_grounding_answer(batch, answer_id=7):
    """The same batch with one answer token (+ eos) after each robot prompt, as grounding adds it."""
    out = {k: np.array(v) for k, v in batch.items()}
    for i in np.flatnonzero(out["has_actions"]):
        n = int(out["token_mask"][i].sum())
        out["tokens"][i, n : n + 2] = (answer_id, 1)
        for key in ("token_mask", "token_ar", "token_loss"):
            out[key][i, n : n + 2] = True
    return out


@pytest.mark.parametrize("arg", ["debug", "debug,head=discrete"])
def test_actions_never_see_the_grounding_answer(arg):
    cfg, model = make(arg)
    batch = random_batch(cfg, 4, seed=3, web_fraction=0.0)
    key = jax.random.key(0)
    params = jax.jit(lambda b: model.init(key, b, key, method=vla.VLA.compute_loss))(batch)
    head = "flow" if cfg.action_head == "flow" else "discrete"
    plain = loss_terms(model, params, batch)
    answered = loss_terms(model, params, _with_grounding_answer(batch))
    other = loss_terms(model, params, _with_grounding_answer(batch, answer_id=9))
    np.testing.assert_allclose(answered[head][0], plain[head][0], rtol=1e-5, atol=1e-6)  # actions: unchanged
    np.testing.assert_allclose(other[head][0], plain[head][0], rtol=1e-5, atol=1e-6)
    assert float(plain["text"][1].sum()) == 0 and float(answered["text"][1].sum()) == 2 * 4  # answer + eos
    assert abs(float(answered["text"][0].sum()) - float(other["text"][0].sum())) > 1e-4  # the answer is scored


def test_readout_joins_the_state_token_only():
    cfg, model, params, batch = init()
    assert cfg.readout  # the debug preset
    plain_cfg, plain = make(readout=False)
    assert not plain_cfg.readout
    zeroed = jax.tree_util.tree_map(np.array, nn.unbox(params))
    for leaf in ("w", "b"):
        zeroed["params"]["readout_proj"][leaf][...] = 0.0
    without = {"params": {k: v for k, v in zeroed["params"].items() if k != "readout_proj"}}
    a = loss_terms(model, zeroed, batch)
    b = loss_terms(plain, without, batch)
    np.testing.assert_allclose(a["flow"][0], b["flow"][0], rtol=1e-5)  # zero readout: exactly pi0's suffix
    c = loss_terms(model, params, batch)
    assert np.abs(np.asarray(c["flow"][0]) - np.asarray(a["flow"][0])).max() > 1e-4  # the readout is used
    with pytest.raises(ValueError, match=r"config\.model\.readout=True needs config\.model\.action_head='flow'"):
        make("debug,head=discrete", readout=True)


def test_location_weights_map_cells_to_image_tokens():
    coarse = vla.location_weights(4, 8)  # the debug preset: 4 x 4 tokens, 8 x 8 cells, 2 x 2 cells per token
    assert coarse.shape == (16, 64)
    np.testing.assert_allclose(coarse.sum(axis=1), 1.0)
    assert set(np.flatnonzero(coarse[5])) == {18, 19, 26, 27}  # token (1, 1) holds cells (2..3, 2..3)
    np.testing.assert_array_equal(vla.location_weights(8, 8), np.eye(64, dtype=np.float32))


def test_location_tokens_join_camera_0_only():
    cfg, model, params, batch = init()
    assert cfg.location_grid == 8 and cfg.location_first_id == 4  # the debug preset
    plain_cfg, plain = make(location_grid=0)
    tokens = model.apply(params, batch, method=vla.VLA.embed_prefix)[0]
    base = plain.apply(params, batch, method=vla.VLA.embed_prefix)[0]  # the same parameters: no new ones
    n = tokens.shape[1] - cfg.max_text_len
    per_cam = n // cfg.num_cameras
    emb = nn.unbox(params)["params"]["llm"]["embedding"][4:68] * np.sqrt(cfg.decoder.experts[0].width)
    want = vla.location_weights(int(per_cam**0.5), 8) @ np.asarray(emb)
    np.testing.assert_allclose(tokens[:, :per_cam] - base[:, :per_cam], np.broadcast_to(want, (4, *want.shape)),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(tokens[:, per_cam:], base[:, per_cam:])  # other cameras and text: untouched
    with pytest.raises(ValueError, match=r"location tokens must lie inside the vocabulary"):
        make(location_first_id=1000)
