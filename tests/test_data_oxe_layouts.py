"""Datasets in real Open X-Embodiment key layouts load through config alone."""

import os

import numpy as np
from data_fixtures import FRACTAL, bridge_dir, make_config, tabletop_dir, write_fractal_dataset  # noqa: F401

from vla_jax.batch import check_batch
from vla_jax.data import SPECS, make_eval_iterator, make_train_iterator, prepare_all


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
    """fractal20220817_data as released (TFRecord): action is a dict of sub-keys, instruction under
    observation/; prepared, only the spec's keys are kept."""
    import shutil

    write_fractal_dataset(str(tmp_path))
    shutil.copy(os.path.join(tabletop_dir, "tokenizer.model"), tmp_path / "tokenizer.model")
    config = make_config(str(tmp_path), "fractal", train_ops=())
    prepare_all(config, num_workers=1, progress=False, log=lambda *a: None)
    prepared = tmp_path / "prepared" / FRACTAL / "train"
    assert np.load(prepared / "action.npy").shape == (24, 7) and np.load(prepared / "state.npy").shape == (24, 8)
    assert sorted(p.name for p in prepared.iterdir()) == [  # the spec's camera, state, action, instruction only
        "action.npy", "episode_lengths.npy", "frames-00000.array_record", "frames-00001.array_record",
        "instruction.ids.npy", "instruction.values.json", "state.npy"]
    batch = next(make_eval_iterator(config, FRACTAL, batch_size=6))
    check_batch(batch, config.model)
    spec = SPECS[FRACTAL]
    assert batch["action_dim_mask"][0].sum() == spec.action_dim == 7
    assert batch["state_mask"][0].sum() == spec.state_dim == 8
    # Step 0 of episode 0: world_vector = 0 (the q01 bound -> -1); the gripper dim (excluded from normalization)
    # is the relative command (-1 open, +1 close) made absolute by the spec: 1 = open, 0 = closed.
    actions = batch["actions"][0]
    np.testing.assert_allclose(actions[0, :3], -1.0, atol=1e-6)
    np.testing.assert_allclose(actions[:, 6][batch["action_step_mask"][0]], [1, 1, 1, 1, 0, 0], atol=1e-6)
    assert batch["image_mask"][0].tolist() == [True, False, False]
