"""Datasets in real Open X-Embodiment key layouts load through config alone."""

import os

import numpy as np
from data_fixtures import bridge_dir, make_config, tabletop_dir  # noqa: F401  (fixtures)

from vla_jax.batch import check_batch
from vla_jax.data import SPECS, compute_all_stats, make_eval_iterator, make_train_iterator


def test_bridge_layout_yields_valid_batches(bridge_dir):  # noqa: F811
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(os.path.join(bridge_dir, "bridge_dataset", "1.0.0"))
    step = builder.info.features["steps"].feature
    assert {"image_0", "state"} <= set(step["observation"]) and "language_instruction" in step
    assert step["action"].shape == (7,)

    config = make_config(bridge_dir, "bridge")
    it = make_train_iterator(config)
    for _ in range(2):
        batch = next(it)
        check_batch(batch, config.model)
        assert batch["has_actions"].all() and (batch["source"] == 0).all()
        np.testing.assert_array_equal(batch["image_mask"], np.tile([True, False, False], (config.batch_size, 1)))
        assert (batch["state_mask"].sum(1) == 7).all() and (batch["action_dim_mask"].sum(1) == 7).all()
        assert batch["token_mask"].sum(1).min() >= 3
        # bounds_q99 actions lie in [-1, 1]; the gripper dim (excluded) keeps its raw 0/1 value.
        assert np.abs(batch["actions"][:, :, :6]).max() <= 1.0
        assert set(np.unique(batch["actions"][:, :, 6][batch["action_step_mask"]])) <= {0.0, 1.0}
    it.close()
    total = sum(len(b["source"]) for b in make_eval_iterator(config, "bridge_dataset"))
    assert total > 0


def test_fractal_layout_dict_actions_and_observation_instruction(tmp_path, tabletop_dir):  # noqa: F811
    """fractal20220817_data: action is a dict of sub-keys, instruction under observation/."""
    import shutil

    import tensorflow_datasets as tfds

    from vla_jax.data import builders

    def gen():
        rng = np.random.default_rng(0)
        for e in range(4):
            steps = []
            for t in range(6):
                steps.append({
                    "observation": {
                        "image": builders.jpeg_bytes(np.full((32, 40, 3), 40 * e, np.uint8)),
                        "natural_language_instruction": "pick coke can",
                        "base_pose_tool_reached": rng.normal(size=7).astype(np.float32),
                        "gripper_closed": np.array([t > 3], np.float32),
                    },
                    "action": {
                        "world_vector": np.full(3, t, np.float32),
                        "rotation_delta": np.full(3, -t, np.float32),
                        "gripper_closedness_action": np.array([1.0 if t > 3 else -1.0], np.float32),
                    },
                    "is_first": t == 0, "is_last": t == 5, "is_terminal": t == 5,
                    "reward": np.float32(0), "discount": np.float32(1),
                })
            yield e, {"steps": steps}

    t = tfds.features
    step = t.FeaturesDict({
        "observation": t.FeaturesDict({
            "image": t.Image(shape=(32, 40, 3), encoding_format="jpeg"),
            "natural_language_instruction": t.Text(),
            "base_pose_tool_reached": t.Tensor(shape=(7,), dtype=np.float32),
            "gripper_closed": t.Tensor(shape=(1,), dtype=np.float32),
        }),
        "action": t.FeaturesDict({k: t.Tensor(shape=(n,), dtype=np.float32) for k, n in
                                  (("world_vector", 3), ("rotation_delta", 3), ("gripper_closedness_action", 1))}),
        **{k: t.Scalar(dtype=np.bool_) for k in ("is_first", "is_last", "is_terminal")},
        "reward": t.Scalar(dtype=np.float32), "discount": t.Scalar(dtype=np.float32),
    })
    builders.write_dataset(str(tmp_path), "fractal20220817_data", t.FeaturesDict({"steps": t.Dataset(step)}),
                           {"train": gen, "val": gen})
    shutil.copy(os.path.join(tabletop_dir, "tokenizer.model"), tmp_path / "tokenizer.model")
    config = make_config(str(tmp_path), "bridge", train_ops=())
    config.data.datasets = {"fractal20220817_data": dict(
        kind="robot", dir="fractal20220817_data", spec="fractal20220817_data", train_split="train",
        eval_split="val", norm_group="")}
    config.data.mixture = {"fractal20220817_data": 1.0}
    compute_all_stats(config, log=lambda *a: None)
    batch = next(make_eval_iterator(config, "fractal20220817_data", batch_size=6))
    check_batch(batch, config.model)
    spec = SPECS["fractal20220817_data"]
    assert batch["action_dim_mask"][0].sum() == spec.action_dim == 7
    assert batch["state_mask"][0].sum() == spec.state_dim == 8
    # Step 0 of episode 0: world_vector = 0 (the q01 bound -> -1); the gripper dim (excluded from normalization)
    # is the relative command (-1 open, +1 close) made absolute by the spec: 1 = open, 0 = closed.
    actions = batch["actions"][0]
    np.testing.assert_allclose(actions[0, :3], -1.0, atol=1e-6)
    np.testing.assert_allclose(actions[:, 6][batch["action_step_mask"][0]], [1, 1, 1, 1, 0, 0], atol=1e-6)
    assert batch["image_mask"][0].tolist() == [True, False, False]


def test_tfrecord_release_is_refused_then_converted(tmp_path, tabletop_dir):  # noqa: F811
    """OXE releases are TFRecord: one clear line says to convert; the converter makes them loadable."""
    import shutil

    import pytest

    from vla_jax.data import DataError, write_tiny_bridge_dataset
    from vla_jax.data.convert import convert_to_array_record

    src_root = tmp_path / "tfrecord"
    write_tiny_bridge_dataset(str(src_root), num_episodes=3, num_val_episodes=1, file_format="tfrecord")
    config = make_config(str(src_root), "bridge")
    shutil.copy(os.path.join(tabletop_dir, "tokenizer.model"), src_root / "tokenizer.model")
    with pytest.raises(DataError, match="random access needs array_record; convert it") as e:
        compute_all_stats(config, log=lambda *a: None)
    assert "'bridge_dataset'" in str(e.value) and "\n" not in str(e.value)

    out_root = tmp_path / "converted"
    convert_to_array_record(str(src_root / "bridge_dataset" / "1.0.0"), str(out_root / "bridge_dataset" / "1.0.0"),
                            log=lambda *a: None)
    shutil.copy(os.path.join(tabletop_dir, "tokenizer.model"), out_root / "tokenizer.model")
    config = make_config(str(out_root), "bridge")
    compute_all_stats(config, log=lambda *a: None)
    batch = next(make_train_iterator(config))
    check_batch(batch, config.model)
    assert batch["has_actions"].all()
