"""LeRobotDataset directories (v2.1, v3.0; video and image cameras) as the robot dataset kind "lerobot": frames
decode to what was encoded, action chunks are the parquet rows, batches, statistics, sharding, exact replay,
one-line errors, and a trainer run from config alone. Datasets are written here by vla_jax's own writer."""

import json
import os
import shutil
import subprocess
import sys

import av
import ml_collections
import numpy as np
import pytest
from data_fixtures import make_config

from vla_jax.batch import check_batch
from vla_jax.data import (DataError, compute_all_stats, load_stats, make_eval_iterator, make_policy_io,
                          make_train_iterator, mixture)
from vla_jax.data.lerobot import LeRobotFrames, LeRobotMeta
from vla_jax.data.lerobot_writer import synthetic_episodes, write_lerobot_dataset
from vla_jax.data.settings import read_settings
from vla_jax.data.specs import SPECS
from vla_jax.train import testing

SPEC = SPECS["lerobot_aloha"]
CAMERAS = SPEC.image_keys
TASKS = ("pick up the cup", "open the drawer", "fold the towel")
LENGTHS = (27, 12, 19, 30, 10)  # episodes 0-3 train, 4 val
DATASETS = {"aloha_v21": dict(version="v2.1"), "aloha_v30": dict(version="v3.0"),
            "aloha_images": dict(version="v3.0", video=False)}


def make_episodes() -> list[dict]:
    episodes = synthetic_episodes(LENGTHS, CAMERAS, {"observation.state": 14, "action": 14}, TASKS)
    rng = np.random.default_rng(1)
    return [{**ep, "observation.effort": rng.normal(size=(len(ep["action"]), 14)).astype(np.float32)}  # unused
            for ep in episodes]


EPISODES = make_episodes()
_CACHE: dict[str, str] = {}


def lerobot_config(root: str, names=("aloha_v21", "aloha_v30"), **overrides) -> ml_collections.ConfigDict:
    config = make_config(root, "lerobot", **overrides)
    config.data.datasets = ml_collections.ConfigDict({n: dict(
        kind="lerobot", dir=n, spec="lerobot_aloha", train_split="train", eval_split="val", norm_group="",
        grounding=False) for n in DATASETS})
    config.data.mixture = ml_collections.ConfigDict({n: 1.0 for n in names})
    return config


@pytest.fixture(scope="module")
def lerobot_dir(tmp_path_factory):
    """The v2.1, v3.0 (video) and v3.0 (image column) datasets, a tokenizer and statistics (read-only)."""
    if "root" not in _CACHE:
        from vla_jax.data.tokenizer import train_tokenizer
        from vla_jax.sim.grounding_answers import LOCATION_TOKENS

        root = str(tmp_path_factory.mktemp("lerobot"))
        for name, kwargs in DATASETS.items():
            write_lerobot_dataset(os.path.join(root, name), EPISODES, fps=50, gop=4, chunks_size=2,
                                  episodes_per_file=2, splits={"train": "0:4", "val": "4:5"}, **kwargs)
        train_tokenizer(list(TASKS), os.path.join(root, "tokenizer.model"), vocab_size=120, symbols=LOCATION_TOKENS,
                        log=lambda *a: None)
        compute_all_stats(lerobot_config(root, tuple(DATASETS)), log=lambda *a: None)
        _CACHE["root"] = root
    return _CACHE["root"]


def _source(root: str, name: str, **kwargs) -> LeRobotFrames:
    settings = read_settings(lerobot_config(root))
    return mixture.build_source(settings, name, 0, split="train", **kwargs).source


@pytest.mark.parametrize("name", ["aloha_v21", "aloha_v30"])
def test_frames_decode_to_the_encoded_frames_and_chunks_are_the_parquet_rows(lerobot_dir, name):
    src = _source(lerobot_dir, name)
    assert len(src) == sum(LENGTHS[:4])
    # Episode starts and ends, every file boundary of the v3.0 layout (episodes 0-1 / 2-3 per file), mid-GOP frames.
    starts = np.concatenate([[0], np.cumsum(LENGTHS[:4])])
    picks = sorted({int(i) for s in starts[:-1] for i in (s, s + 1, s + 5)} | {int(s) - 1 for s in starts[1:]})
    for index in picks:
        episode, t = src.locate(index)
        raw = src[index]
        original = EPISODES[episode]
        n = min(8, LENGTHS[episode] - t)
        assert raw["num_steps"] == n and raw["instruction"] == original["task"]
        np.testing.assert_array_equal(raw["actions"], original["action"][t:t + n])
        np.testing.assert_array_equal(raw["state"], original["observation.state"][t])
        for slot, key in enumerate(CAMERAS):
            image = raw["images"][slot].astype(np.float64)
            assert image.shape == (64, 64, 3)
            error = np.abs(image - original[key][t]).mean()
            assert error < 3.0, (index, key, error)  # mean abs difference < 3/255
            for other in (t - 1, t + 1):  # the frame itself, not a neighbour
                if 0 <= other < LENGTHS[episode]:
                    assert np.abs(image - original[key][other]).mean() > 3 * error


def test_image_column_dataset_reads_the_png_bytes(lerobot_dir):
    from vla_jax.data.sources import decode_image

    src = _source(lerobot_dir, "aloha_images")
    episode, t = src.locate(40)
    raw = src[40]
    for slot, key in enumerate(CAMERAS):
        assert isinstance(raw["images"][slot], bytes)
        np.testing.assert_array_equal(np.asarray(decode_image(raw["images"][slot])), EPISODES[episode][key][t])
    np.testing.assert_array_equal(raw["actions"], EPISODES[episode]["action"][t:t + 8])


@pytest.mark.parametrize("codec", ["libx264", "mpeg4", "libsvtav1"])
def test_codecs_decode_within_tolerance(tmp_path, codec):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV wheel has no {codec} encoder")
    episodes = [{k: v[:12] if k != "task" else v for k, v in EPISODES[0].items()}]
    root = write_lerobot_dataset(str(tmp_path / codec), episodes, fps=50, codec=codec, gop=4)
    meta = LeRobotMeta(root, codec)
    src = LeRobotFrames(meta, SPEC, [0], horizon=8, num_cameras=3, source=0)
    for t in (0, 3, 6, 11):
        error = np.abs(src[t]["images"][0].astype(np.float64) - episodes[0][CAMERAS[0]][t]).mean()
        assert error < 3.0, (codec, t, error)


def test_lerobot_batches_eval_split_stats_and_shards(lerobot_dir):
    config = lerobot_config(lerobot_dir, tuple(DATASETS))
    it = make_train_iterator(config)
    batch = next(it)
    it.close()
    check_batch(batch, config.model)
    assert set(batch["source"].tolist()) <= {0, 1, 2} and len(set(batch["source"].tolist())) > 1
    assert batch["has_actions"].all() and batch["image_mask"].all()
    assert (batch["action_dim_mask"].sum(1) == 14).all() and (batch["state_mask"].sum(1) == 14).all()
    # The val split (episode 4) in record order, every frame once.
    val = list(make_eval_iterator(config, "aloha_v30", batch_size=4))
    assert sum(len(b["source"]) for b in val) == LENGTHS[4]
    # Statistics: the train episodes' state and action, from the parquet columns.
    for name in DATASETS:
        st = load_stats(os.path.join(lerobot_dir, name), name, SPEC, os.path.join(lerobot_dir, "stats"), "lerobot")
        actions = np.concatenate([ep["action"] for ep in EPISODES[:4]])
        np.testing.assert_allclose(st["action"]["mean"], actions.mean(0), atol=1e-5)
        np.testing.assert_allclose(st["action"]["q99"], np.quantile(actions, 0.99, axis=0), atol=1e-5)
        assert st["episode_lengths"] == list(LENGTHS[:4]) and st["num_transitions"] == sum(LENGTHS[:4])
    # Closed-loop input from a LeRobot-style observation dict (feature names as keys), normalized like training.
    io = make_policy_io(config, "aloha_v30")
    obs = {k: EPISODES[0][k][0] for k in CAMERAS} | {"observation.state": EPISODES[0]["observation.state"][0]}
    example = io.observation(obs, TASKS[0])
    assert example["image_mask"].all() and io.control_hz == 50.0
    np.testing.assert_allclose(example["state"][0, :14], io.state_norm(obs["observation.state"]), atol=1e-6)
    # Two processes: disjoint episodes that add up to the split.
    shards = [_source(lerobot_dir, "aloha_v30", process_index=p, process_count=2) for p in (0, 1)]
    assert set(shards[0].episode_ids).isdisjoint(shards[1].episode_ids)
    assert len(shards[0]) + len(shards[1]) == sum(LENGTHS[:4])


def test_stats_go_stale_when_a_dataset_is_rewritten_with_the_same_counts(lerobot_dir, tmp_path):
    root, name = str(tmp_path), "aloha_v30"
    shutil.copy(os.path.join(lerobot_dir, "tokenizer.model"), root)
    episodes = [{k: v[:10] for k, v in ep.items() if k != "task"} | {"task": ep["task"]} for ep in EPISODES]
    write_lerobot_dataset(os.path.join(root, name), episodes, fps=50, splits={"train": "0:4", "val": "4:5"})
    compute_all_stats(lerobot_config(root, (name,)), log=lambda *a: None)
    episodes[1]["action"] = episodes[1]["action"] + 0.5
    shutil.rmtree(os.path.join(root, name))
    write_lerobot_dataset(os.path.join(root, name), episodes, fps=50, splits={"train": "0:4", "val": "4:5"})
    with pytest.raises(DataError, match="stats are stale"):
        load_stats(os.path.join(root, name), name, SPEC, os.path.join(root, "stats"), "lerobot")


def test_iterator_state_replays_exactly_with_lerobot_sources(lerobot_dir):
    config = lerobot_config(lerobot_dir, batch_size=8, num_workers=1)
    it = make_train_iterator(config)
    [next(it) for _ in range(2)]
    state = it.get_state()
    expected = [next(it) for _ in range(2)]
    it.close()
    restored = make_train_iterator(config)
    restored.set_state(state)
    got = [next(restored) for _ in range(2)]
    restored.close()
    for a, b in zip(expected, got):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _one_line(excinfo, *parts):
    message = str(excinfo.value)
    assert "\n" not in message and all(p in message for p in parts), message


def test_bad_files_fail_in_one_line(lerobot_dir, tmp_path):
    root = str(tmp_path)
    for name in ("aloha_v21", "aloha_v30"):
        shutil.copytree(os.path.join(lerobot_dir, name), os.path.join(root, name))
    shutil.copy(os.path.join(lerobot_dir, "tokenizer.model"), root)
    compute_all_stats(lerobot_config(root), log=lambda *a: None)  # the fingerprint names the path
    # v3.0: a truncated mp4 (file 1 holds episodes 2 and 3); v2.1: an mp4 overwritten by garbage.
    truncated = "videos/observation.images.cam_left_wrist/chunk-000/file-001.mp4"
    path = os.path.join(root, "aloha_v30", truncated)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    corrupt = "videos/chunk-000/observation.images.cam_high/episode_000001.mp4"
    with open(os.path.join(root, "aloha_v21", corrupt), "wb") as f:
        f.write(np.random.default_rng(0).bytes(3000))
    settings = read_settings(lerobot_config(root))
    for name, relative, episode in (("aloha_v30", truncated, 2), ("aloha_v21", corrupt, 1)):
        src = mixture.build_source(settings, name, 0, split="train").source
        index = int(np.searchsorted(src.episode_ids, episode))
        first = int(src.ends[index - 1]) if index else 0
        with pytest.raises(DataError) as excinfo:
            src[first + 3]
        _one_line(excinfo, name, relative, f"episode {episode}")
    os.remove(os.path.join(root, "aloha_v30", "meta", "info.json"))
    with pytest.raises(DataError) as excinfo:
        make_train_iterator(lerobot_config(root, ("aloha_v30",)))
    _one_line(excinfo, "aloha_v30", "meta/info.json not found")
    # A spec camera the dataset does not have.
    info_path = os.path.join(root, "aloha_v21", "meta", "info.json")
    info = json.load(open(info_path))
    del info["features"]["observation.images.cam_right_wrist"]
    json.dump(info, open(info_path, "w"))
    with pytest.raises(DataError) as excinfo:
        mixture.build_source(settings, "aloha_v21", 0, split="train")
    _one_line(excinfo, "aloha_v21", "observation.images.cam_right_wrist", "slot 2")


def test_train_steps_on_a_lerobot_dataset_from_config_only(lerobot_dir, tmp_path):
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    os.symlink(os.path.join(lerobot_dir, "aloha_v30"), os.path.join(data_dir, "lerobot_aloha"))
    shutil.copy(os.path.join(lerobot_dir, "tokenizer.model"), data_dir)
    compute_all_stats(make_config(data_dir, "lerobot"), log=lambda *a: None)  # what tools/compute_stats.py does
    overrides = {**testing.TINY, "model.max_action_dim": 14, "model.max_state_dim": 14, "num_steps": 2,
                 "checkpoint.every": 2, "data.data_dir": data_dir, "data.num_workers": 0}
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "vla_jax.train", f"--workdir={workdir}",
           "--config=configs/pretrain.py:debug,mixture=lerobot"]
    cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
    out = subprocess.run(cmd, cwd=testing.REPO, env=testing.env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [m["step"] for m in lines] == [1, 2] and all(m["loss/flow/lerobot_aloha"] > 0 for m in lines)
    assert os.path.isdir(workdir / "checkpoints" / "2")
