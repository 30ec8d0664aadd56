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
from vla_jax.train import testing

CONFIG = "configs/pretrain.py"
# The tiny sizes of the training tests (vla_jax/train/testing.py): every code path, compiled in seconds.
TINY = {k[len("model."):]: v for k, v in testing.TINY.items() if k.startswith("model.")}
TINY_DISCRETE = {**TINY, "addons": (), "vocab_size": 1024}  # room for the 256 action bins; no state-token add-on


def make(arg="debug", **model_overrides):
    config = load_config(f"{CONFIG}:{arg}", {f"model.{k}": v for k, v in model_overrides.items()})
    cfg = vla.make_config(config.model)
    return cfg, vla.VLA(cfg)


@functools.lru_cache(maxsize=None)
def init(arg="debug", tiny=True):
    """(cfg, model, params, batch of 4) of preset ``arg``, at the tiny sizes unless ``tiny=False``."""
    cfg, model = make(arg, **(TINY if tiny else {}))
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


@pytest.mark.parametrize("arg", ["debug", "small", "pi0", "pi05", "debug,head=discrete", "pi0,head=discrete"])
def test_shapes_every_preset(arg):
    cfg, model = make(arg)
    batch = summary.dummy_batch(cfg, batch_size=2)
    params = summary.param_shapes(cfg)
    terms = jax.eval_shape(lambda p, b: model.apply(p, b, jax.random.key(0), method=vla.VLA.compute_loss),
                           params, batch)
    head = "flow" if cfg.action_head == "flow" else "discrete"
    assert set(terms) == set(cfg.loss_names)
    assert terms[head][0].shape == (2,) and terms["text"][1].shape == (2,)
    if cfg.action_head == "flow":
        acts = jax.eval_shape(lambda p, b: vla.sample(model, p, b, jax.random.key(0)), params, batch)
        assert acts.shape == (2, cfg.action_horizon, cfg.max_action_dim)
        kv = jax.eval_shape(lambda p, b: model.apply(p, b, method=vla.VLA.encode_prefix), params, batch).kv
        prefix_len = cfg.num_cameras * cfg.vit.num_patches + cfg.max_text_len
        assert kv[0].shape == (cfg.decoder.depth, 2, prefix_len, cfg.decoder.num_kv_heads, cfg.decoder.head_dim)


def test_sampler_averages_independent_flow_samples():
    from vla_jax.eval.agents import ActionSampler

    cfg, model, params, batch = init()
    obs = {k: batch[k] for k in OBSERVATION_KEYS}
    key = jax.random.fold_in(jax.random.PRNGKey(3), 0)  # the sampler's first call
    single = ActionSampler(model, params, seed=3)(obs)
    np.testing.assert_allclose(single, vla.sample(model, params, obs, key), atol=1e-6)
    mean = ActionSampler(model, params, seed=3, num_samples=3)(obs)
    parts = [vla.sample(model, params, obs, k) for k in jax.random.split(key, 3)]
    np.testing.assert_allclose(mean, np.mean(parts, axis=0), atol=1e-5)
    assert np.abs(np.asarray(parts[0]) - np.asarray(parts[1])).max() > 1e-2  # the samples differ: a real average
    with pytest.raises(ValueError, match="num_samples=0"):
        ActionSampler(model, params, num_samples=0)


def test_sincos2d_position_embedding_init():
    from vla_jax.models.vit import posemb_sincos2d

    cfg, model = make(**TINY)
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
    cfg, _ = make("pi05")
    _, measured, derived = summary.summary_table(cfg)
    assert measured == derived == 3_353_433_872  # openpi's pi0.5 (openpi_param_names_pi05.txt)


def test_prefix_outputs_ignore_suffix():
    cfg, model, params, batch = init()

    def prefix_out(p, b, x_t):
        def fn(m, b, x_t):
            prefix = m.run_prefix(m.embed_prefix(b))
            p_tok, p_mask, p_ar = prefix.tokens, prefix.mask, prefix.ar
            s_tok, s_mask, s_ar, cond = m.embed_suffix(b["state"], x_t, jnp.full((x_t.shape[0],), 0.5), prefix)
            mask = jnp.concatenate([p_mask, s_mask], 1)
            ar = jnp.concatenate([p_ar, s_ar], 1)
            (p_out, s_out), _ = m.llm([p_tok, s_tok], jnp.cumsum(mask, 1) - 1, vla.make_attn_mask(mask, ar),
                                      cond=cond)
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
    cfg, model = make(f"debug,head={head}", **(TINY if head == "flow" else TINY_DISCRETE))
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
    cfg, model = make("debug,head=discrete", **{**TINY_DISCRETE, "action_horizon": 2})
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
        prefix = m.run_prefix(m.embed_prefix(inp))
        logits = m.text_logits(prefix.outputs[:, -inp["tokens"].shape[1]:], prefix)
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
    cfg, model = make(**TINY)
    batch = random_batch(cfg, 2, seed=0)
    key = jax.random.key(42)
    run = jax.jit(lambda b: vla.sample(model, model.init(key, b, key, method=vla.VLA.compute_loss), b, key))
    np.testing.assert_array_equal(np.asarray(run(batch)), np.asarray(run(batch)))


def test_bad_inputs_raise_one_clear_line():
    cfg, model, params, batch = init()
    wrong_size = {**batch, "images": batch["images"][:, :, :8, :8]}
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
    cfg, model = make(arg, **(TINY_DISCRETE if "discrete" in arg else TINY))
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


