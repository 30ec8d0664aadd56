"""The grain pipeline: batch format, chunks at episode ends, web examples, mixing shares, checkpoint
replay, per-process sharding, eval iterator, augmentation, policy I/O."""

import os

import numpy as np
import pytest
from data_fixtures import make_config, tabletop_dir  # noqa: F401  (fixture)

from vla_jax.batch import OBSERVATION_KEYS, check_batch
from vla_jax.data import SPECS, Normalizer, make_eval_iterator, make_policy_io, make_train_iterator, mixture
from vla_jax.data.settings import read_settings

NAMES = ["tabletop_bimanual", "tabletop_single_arm", "tabletop_web_vl"]  # source index = sorted name order


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_train_batches_follow_the_batch_format(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir)
    it = make_train_iterator(config, process_index=0, process_count=1)
    batch = next(it)
    check_batch(batch, config.model)
    assert batch["images"].shape[0] == config.batch_size
    assert batch["images"].min() >= -1.0 and batch["images"].max() <= 1.0
    robot, web = batch["has_actions"], ~batch["has_actions"]
    assert robot.any() and web.any()
    np.testing.assert_array_equal(batch["source"][web], NAMES.index("tabletop_web_vl"))
    # Robot: the prompt, then (until a gripper reaches the target) the grounding answer: one location
    # token + eos, causal with loss; real state / action dims per embodiment.
    from vla_jax.data import Tokenizer
    from vla_jax.sim.grounding_answers import LOCATION_TOKENS

    tok = Tokenizer(os.path.join(tabletop_dir, "tokenizer.model"))
    answered = batch["token_ar"][robot].sum(axis=1)
    assert set(answered.tolist()) == {0, 2}
    np.testing.assert_array_equal(batch["token_ar"][robot], batch["token_loss"][robot])
    for i in np.flatnonzero(robot & (batch["token_ar"].sum(axis=1) > 0)):
        answer = batch["tokens"][i][batch["token_ar"][i]]
        assert tok.decode(answer[:1]) in LOCATION_TOKENS and answer[1] == tok.eos_id
    assert batch["token_mask"][robot].any(axis=1).all()
    for i in np.flatnonzero(robot):
        dims = 14 if batch["source"][i] == NAMES.index("tabletop_bimanual") else 7
        assert batch["action_dim_mask"][i].sum() == dims
        assert not batch["actions"][i][:, dims:].any() and not batch["actions"][i][~batch["action_step_mask"][i]].any()
        cams = 3 if dims == 14 else 2
        assert batch["image_mask"][i].sum() == cams and not batch["images"][i][cams:].any()
        assert batch["state_mask"][i].sum() == (14 if dims == 14 else 8)
    # Web: image in slot 0 only, answer tokens causal with loss, no actions.
    for i in np.flatnonzero(web):
        np.testing.assert_array_equal(batch["image_mask"][i], [True, False, False])
        ar, mask = batch["token_ar"][i], batch["token_mask"][i]
        assert ar.any() and np.array_equal(ar, batch["token_loss"][i]) and not (ar & ~mask).any()
        first = np.argmax(ar)
        assert mask[:first].all() and not ar[:first].any()  # prompt first, then answer
        assert not batch["action_step_mask"][i].any() and not batch["action_dim_mask"][i].any()
        assert not batch["state_mask"][i].any()
    it.close()


def test_action_chunks_at_episode_ends(tabletop_dir):  # noqa: F811
    import tensorflow_datasets as tfds

    config = make_config(tabletop_dir)
    settings = read_settings(config)
    name = "tabletop_single_arm"
    entry = mixture.build_source(settings, name, NAMES.index(name), split="train")
    src = entry.source
    horizon = settings.dims.action_horizon
    # The last transition of the first episode of the shard, and the one `back` steps before it.
    episode_id, length = int(src.episode_ids[0]), int(src.lengths[0])
    decoded = tfds.builder_from_directory(os.path.join(tabletop_dir, name, "1.0.0")).as_data_source("train")
    raw_actions = np.stack([s["action"] for s in decoded[episode_id]["steps"]])
    raw_states = np.stack([s["observation"]["state"] for s in decoded[episode_id]["steps"]])
    assert len(raw_actions) == length
    transform = mixture.sample_transform(settings, {NAMES.index(name): entry.info}, mixture.load_tokenizer(settings), ())
    st = entry.info
    for back in (0, 2, horizon + 1):
        t = length - 1 - back
        assert src.locate(t) == (episode_id, t)
        ex = transform(src[t], np.random.default_rng(0))
        valid = min(back + 1, horizon)
        np.testing.assert_array_equal(ex["action_step_mask"], np.arange(horizon) < valid)
        np.testing.assert_allclose(ex["actions"][:valid, :7], st.action_norm(raw_actions[t:t + valid]), atol=1e-6)
        assert not ex["actions"][valid:].any()
        np.testing.assert_allclose(ex["state"][:8], st.state_norm(raw_states[t]), atol=1e-6)
        assert ex["has_actions"]
    # The gripper dim (excluded from normalization) keeps its raw 0/1 value.
    ex = transform(src[0], np.random.default_rng(0))
    spec = SPECS[name]
    for d in spec.action_gripper_dims:
        np.testing.assert_array_equal(ex["actions"][:, d][ex["action_step_mask"]],
                                      raw_actions[:horizon, d][: ex["action_step_mask"].sum()])


def test_mixture_shares_match_weights(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir, batch_size=50, train_ops=(), eval_ops=())
    config.model.image_size = 16
    config.model.num_cameras = 1
    it = make_train_iterator(config)
    sources = np.concatenate([b["source"] for b in _take(it, 100)])  # 5,000 samples
    it.close()
    weights = dict(config.data.mixture)
    for i, name in enumerate(NAMES):
        share = np.mean(sources == i)
        assert abs(share - weights[name]) < 0.02, (name, share)


def test_balance_by_size_multiplies_weights_by_transitions(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir, "balanced")
    rows = {r["name"]: r for r in mixture.describe_mixture(config)}
    total = sum(r["size"] for r in rows.values())
    for r in rows.values():
        assert r["share"] == pytest.approx(r["size"] / total)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterator_state_replays_exactly(tabletop_dir, num_workers):  # noqa: F811
    config = make_config(tabletop_dir, batch_size=8, num_workers=num_workers)
    it = make_train_iterator(config)
    _take(it, 3)
    state = it.get_state()
    expected = _take(it, 3)
    it.close()
    restored = make_train_iterator(config)
    restored.set_state(state)
    got = _take(restored, 3)
    restored.close()
    for a, b in zip(expected, got):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # A different seed gives different batches (the comparison above can fail).
    other = make_train_iterator(make_config(tabletop_dir, batch_size=8, seed=1))
    _take(other, 3)
    assert not np.array_equal(next(other)["images"], expected[0]["images"])
    other.close()


def test_two_processes_read_disjoint_shards(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir)
    settings = read_settings(config)
    for index, name in enumerate(NAMES):
        split = settings.datasets[name].train_split
        shards = [mixture.build_source(settings, name, index, split=split, process_index=p, process_count=2).source
                  for p in (0, 1)]
        ids = [set(s.episode_ids.tolist() if hasattr(s, "episode_ids") else s.example_ids.tolist()) for s in shards]
        assert ids[0] and ids[1] and ids[0].isdisjoint(ids[1])
        full = mixture.build_source(settings, name, index, split=split).source
        assert len(shards[0]) + len(shards[1]) == len(full)
    batches = [next(make_train_iterator(config, process_index=p, process_count=2)) for p in (0, 1)]
    for b in batches:
        check_batch(b, config.model)
        assert b["images"].shape[0] == config.batch_size // 2
    robot = [b["state"][b["has_actions"]] for b in batches]
    assert not any(np.array_equal(x, y) for x in robot[0] for y in robot[1])


def test_eval_iterator_is_finite_deterministic_and_complete(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir, batch_size=8)
    name = "tabletop_bimanual"
    runs = [list(make_eval_iterator(config, name)) for _ in range(2)]
    total = sum(len(b["source"]) for b in runs[0])
    import tensorflow_datasets as tfds

    decoded = tfds.builder_from_directory(os.path.join(tabletop_dir, name, "1.0.0")).as_data_source("val")
    assert total == sum(len(decoded[i]["steps"]) for i in range(len(decoded)))
    for a, b in zip(*runs):
        check_batch(a, config.model)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    assert np.all(runs[0][0]["source"] == NAMES.index(name))
    web = list(make_eval_iterator(config, "tabletop_web_vl", batch_size=64))
    assert sum(len(b["source"]) for b in web) == 10 and not web[0]["has_actions"].any()


def test_train_augmentation_changes_images_eval_does_not(tabletop_dir):  # noqa: F811
    plain = make_config(tabletop_dir, "single_arm_only", batch_size=8, train_ops=())
    aug = make_config(tabletop_dir, "single_arm_only", batch_size=8)
    a, b = next(make_train_iterator(plain)), next(make_train_iterator(aug))
    np.testing.assert_array_equal(a["state"], b["state"])  # same examples, same order
    assert not np.allclose(a["images"][:, 0], b["images"][:, 0])
    e1 = next(make_eval_iterator(aug, "tabletop_single_arm"))
    e2 = next(make_eval_iterator(plain, "tabletop_single_arm"))
    np.testing.assert_array_equal(e1["images"], e2["images"])  # eval ops do not depend on train_ops


def test_policy_io_matches_training_preprocessing(tabletop_dir):  # noqa: F811
    from vla_jax.sim import TabletopEnv, sample_task

    config = make_config(tabletop_dir)
    io = make_policy_io(config, "tabletop_single_arm")
    task = sample_task(np.random.default_rng(3))
    obs = TabletopEnv("single_arm", 96).reset(task, 3)
    batch = io.observation(obs, task.instruction)
    check_batch(batch, config.model, keys=OBSERVATION_KEYS)
    np.testing.assert_array_equal(batch["image_mask"][0], [True, True, False])
    np.testing.assert_allclose(batch["state"][0, :8], io.state_norm(obs["state"]), atol=1e-6)
    raw = np.random.default_rng(0).uniform(-0.03, 0.03, (8, 7)).astype(np.float32)
    raw[:, 3:5] = 0.0  # roll / pitch deltas are constant 0 in the data (degenerate dims map to q01)
    raw[:, 6] = 1.0
    padded = np.zeros((1, 8, 14), np.float32)
    padded[0, :, :7] = io.action_norm(raw)
    np.testing.assert_allclose(io.actions(padded)[0], raw, atol=1e-5)
    assert isinstance(io.action_norm, Normalizer) and io.control_hz == 10.0


def test_text_is_truncated_and_padded(tabletop_dir):  # noqa: F811
    from vla_jax.data import Tokenizer
    from vla_jax.data.transforms import build_tokens

    tok = Tokenizer(os.path.join(tabletop_dir, "tokenizer.model"))
    long_q = " ".join(["how many red blocks are there"] * 10)
    tokens, mask, ar, loss = build_tokens(tok, long_q, "two", 16)
    assert tokens.shape == (16,) and mask.all()  # filled to max_text_len
    assert ar[-1] and tokens[-1] == tok.eos_id and ar.sum() == len(tok.encode("two")) + 1  # answer kept whole
    assert tokens[0] == tok.bos_id and not ar[0] and np.array_equal(ar, loss)
    tokens, mask, ar, _ = build_tokens(tok, "pick up the red block", None, 16)
    n = len(tok.encode("pick up the red block")) + 1
    assert mask.sum() == n and not ar.any() and not tokens[n:].any()


def test_ops_come_from_the_registry_by_name(tabletop_dir):  # noqa: F811
    from vla_jax.data import register_op
    from vla_jax.data.transforms import parse_op

    assert parse_op("random_resized_crop(scale=(0.5, 1.0), slots=(0,))") == (
        "random_resized_crop", (), {"scale": (0.5, 1.0), "slots": (0,)})

    @register_op("test_blackout")
    def _blackout(ctx, slot=0):
        from PIL import Image

        def op(sample, rng):
            if sample["images"][slot] is not None:
                sample["images"][slot] = Image.new("RGB", (ctx.image_size, ctx.image_size))
            return sample

        return op

    config = make_config(tabletop_dir, "single_arm_only", batch_size=4, train_ops=("test_blackout(slot=1)",))
    batch = next(make_train_iterator(config))
    np.testing.assert_array_equal(batch["images"][:, 1], -1.0)  # black in [-1, 1]
    assert batch["images"][:, 0].max() > -1.0


def test_drop_cameras_masks_wrist_views_but_never_every_view():
    from PIL import Image

    from vla_jax.data.errors import DataError
    from vla_jax.data.transforms import OpContext, build_ops

    ctx = OpContext(image_size=8, num_cameras=3)
    (op,) = build_ops(["drop_cameras(p=0.5, slots=(1, 2))"], ctx)
    rng = np.random.default_rng(0)
    kept = []
    for _ in range(400):
        sample = op({"images": [Image.new("RGB", (8, 8)) for _ in range(3)]}, rng)
        assert sample["images"][0] is not None  # slot 0 is not listed
        kept.append([im is not None for im in sample["images"][1:]])
    assert 0.4 < 1 - np.mean(kept) < 0.6  # each wrist slot dropped about half the time
    (always,) = build_ops(["drop_cameras(p=1.0, slots=(0, 1, 2))"], ctx)
    sample = always({"images": [Image.new("RGB", (8, 8)), None, Image.new("RGB", (8, 8))]}, rng)
    assert sum(im is not None for im in sample["images"]) == 1  # the last view left is kept
    with pytest.raises(DataError, match=r"p must be in \[0, 1\]"):
        build_ops(["drop_cameras(p=1.5)"], ctx)


def test_grounding_off_leaves_the_robot_prompt_alone(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir)
    for name in ("tabletop_single_arm", "tabletop_bimanual"):
        config.data.datasets[name].grounding = False
    it = make_train_iterator(config, process_index=0, process_count=1)
    batch = next(it)
    it.close()
    robot = batch["has_actions"]
    assert robot.any() and not batch["token_ar"][robot].any() and not batch["token_loss"][robot].any()
