"""Generated TFDS datasets: RLDS schema, splits, held-out discipline, caching, tokenizer, specs vs sim."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from data_fixtures import ROOT, TINY, tabletop_dir  # noqa: F401  (fixture)

from vla_jax.data import SPECS, Tokenizer, builders, generate

STEP_KEYS = {"observation", "action", "language_instruction", "reward", "discount", "is_first", "is_last",
             "is_terminal", "target_location"}


@pytest.mark.parametrize("name,embodiment", [("tabletop_single_arm", "single_arm"), ("tabletop_bimanual", "bimanual")])
def test_robot_dataset_has_rlds_schema(tabletop_dir, name, embodiment):  # noqa: F811
    import tensorflow_datasets as tfds

    from vla_jax.sim import EMBODIMENTS

    emb = EMBODIMENTS[embodiment]
    builder = tfds.builder_from_directory(os.path.join(tabletop_dir, name, "1.0.0"))
    assert set(builder.info.splits) == {"train", "val"}
    assert builder.info.splits["train"].num_examples == TINY["episodes_per_embodiment"]
    features = builder.info.features
    assert set(features) == {"steps", "episode_metadata"}
    assert isinstance(features["steps"], tfds.features.Dataset)
    step = features["steps"].feature
    assert set(step) == STEP_KEYS
    assert set(step["observation"]) == set(emb.camera_names) | {"state"}
    for cam in emb.camera_names:
        assert isinstance(step["observation"][cam], tfds.features.Image)
    episode = builder.as_data_source("train")[0]
    steps = list(episode["steps"])
    assert steps[0]["is_first"] and not any(s["is_first"] for s in steps[1:])
    assert steps[-1]["is_last"] and not any(s["is_last"] for s in steps[:-1])
    assert steps[0]["observation"]["image_0"].shape == (96, 96, 3)
    assert steps[0]["observation"]["image_0"].dtype == np.uint8
    assert steps[0]["action"].shape == (emb.action_dim,)
    assert steps[0]["observation"]["state"].shape == (emb.state_dim,)
    assert isinstance(steps[0]["language_instruction"], bytes) and steps[0]["language_instruction"]


def test_splits_use_train_tasks_and_disjoint_seeds(tabletop_dir):  # noqa: F811
    import tensorflow_datasets as tfds

    from vla_jax.sim import HELDOUT_COMBOS

    builder = tfds.builder_from_directory(os.path.join(tabletop_dir, "tabletop_single_arm", "1.0.0"))
    seeds = {}
    for split in ("train", "val"):
        source = builder.as_data_source(split)
        seeds[split] = {int(source[i]["episode_metadata"]["seed"]) for i in range(len(source))}
        for i in range(len(source)):
            text = source[i]["steps"][0]["language_instruction"].decode()
            for color, kind in HELDOUT_COMBOS:
                assert f"{color} {kind}" not in text, text
    assert seeds["train"].isdisjoint(seeds["val"])
    assert len(seeds["val"]) == round(TINY["episodes_per_embodiment"] * TINY["val_fraction"])


def test_web_dataset(tabletop_dir):  # noqa: F811
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(os.path.join(tabletop_dir, "tabletop_web_vl", "1.0.0"))
    assert set(builder.info.features) == {"image", "caption", "qa"}
    ex = builder.as_data_source("train")[0]
    assert ex["image"].shape == (96, 96, 3)
    assert ex["caption"] and len(ex["qa"]["question"]) == len(ex["qa"]["answer"]) > 0


def test_if_missing_is_a_cached_noop_and_partial_dirs_are_incomplete(tabletop_dir, tmp_path):  # noqa: F811
    info = os.path.join(tabletop_dir, "tabletop_bimanual", "1.0.0", "dataset_info.json")
    before = os.path.getmtime(info)
    summary = generate.generate_datasets(tabletop_dir, if_missing=True, progress=False, log=lambda *a: None, **TINY)
    assert summary.get("cached") is True
    assert os.path.getmtime(info) == before
    # A dataset dir without a finished dataset_info.json (e.g. a killed run) does not count as complete.
    os.makedirs(tmp_path / "tabletop_bimanual" / "1.0.0")
    (tmp_path / "tabletop_bimanual" / "1.0.0" / "tabletop_bimanual-train.array_record-00000-of-00001").write_bytes(b"")
    assert not builders.is_complete(str(tmp_path), "tabletop_bimanual")
    assert builders.is_complete(tabletop_dir, "tabletop_bimanual")
    assert not [d for d in os.listdir(tabletop_dir) if d.startswith(".tmp-")]


def test_generate_cli_if_missing(tabletop_dir):  # noqa: F811
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "generate_data.py"), "--out_dir", tabletop_dir, "--if_missing"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "nothing to do" in out.stdout


def test_tokenizer_covers_every_instruction(tabletop_dir):  # noqa: F811
    tok = Tokenizer(os.path.join(tabletop_dir, "tokenizer.model"))
    assert 50 < tok.vocab_size <= generate.DEFAULT_VOCAB_SIZE
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
    unk = tok.sp.unk_id()
    for text in generate.all_instructions()[::7]:
        ids = tok.encode(text)
        assert unk not in ids and tok.decode(ids) == text


def test_tabletop_specs_match_sim_embodiments():
    from vla_jax.sim import EMBODIMENTS

    for name, emb_name in generate.ROBOT_DATASETS.items():
        spec, emb = SPECS[name], EMBODIMENTS[emb_name]
        assert (spec.action_dim, spec.state_dim, spec.control_hz) == (emb.action_dim, emb.state_dim, emb.control_hz)
        assert list(spec.action_gripper_dims) == [i for i, g in enumerate(emb.gripper_dims) if g]
        cams = [k.split("/")[-1] for k in spec.image_keys if k]
        assert cams == list(emb.camera_names)


def test_dataset_metadata_records_embodiment(tabletop_dir):  # noqa: F811
    with open(os.path.join(tabletop_dir, "tabletop_bimanual", "1.0.0", "metadata.json")) as f:
        meta = json.load(f)
    assert meta["action_dim"] == 14 and meta["gripper_dims"] == [6, 13] and meta["control_hz"] == 20.0


def test_temp_dirs_of_killed_runs_are_removed(tmp_path):
    stale = tmp_path / ".tmp-bridge_dataset-99999999-deadbeef"  # pid that cannot be alive
    (stale / "bridge_dataset").mkdir(parents=True)
    builders.write_tiny_bridge_dataset(str(tmp_path), num_episodes=2, num_val_episodes=1)
    assert not stale.exists()
    assert builders.is_complete(str(tmp_path), "bridge_dataset")
    assert sorted(os.listdir(tmp_path)) == ["bridge_dataset"]
