"""Normalization statistics: values (equal to numpy over the TFDS-decoded episodes), round trips with
gripper masks, combining, stale-hash detection (spec changes and datasets regenerated in place with the
same counts)."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
from data_fixtures import make_config, tabletop_dir  # noqa: F401  (fixture)

from vla_jax.data import (DataError, Normalizer, SPECS, combine_stats, compute_all_stats, load_stats,
                          make_train_iterator, norm_stats as stats, prepare_all, release, write_tiny_bridge_dataset)
from vla_jax.data.norm_stats import compute_stats


def _quiet(*args):
    pass


def _block(x):
    return {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "min": x.min(0).tolist(), "max": x.max(0).tolist(),
            "q01": np.quantile(x, 0.01, 0).tolist(), "q99": np.quantile(x, 0.99, 0).tolist()}


@pytest.mark.parametrize("name", ["tabletop_bimanual", "tabletop_single_arm"])
def test_stats_match_numpy_over_decoded_episodes(tabletop_dir, name):  # noqa: F811
    """The statistics from the prepared columns are those of every step of the source's episodes."""
    import tensorflow_datasets as tfds

    st = load_stats(os.path.join(tabletop_dir, "prepared", name), name, SPECS[name], os.path.join(tabletop_dir, "stats"))
    source = tfds.builder_from_directory(os.path.join(tabletop_dir, name, "1.0.0")).as_data_source("train")
    episodes = [list(source[i]["steps"]) for i in range(len(source))]
    values = {"action": np.concatenate([[s["action"] for s in steps] for steps in episodes]),
              "state": np.concatenate([[s["observation"]["state"] for s in steps] for steps in episodes])}
    assert st["num_transitions"] == len(values["action"]) and st["num_trajectories"] == len(source)
    assert st["episode_lengths"] == [len(steps) for steps in episodes]
    for what, x in values.items():
        # moments in float64; quantiles of the float32 values, as norm_stats always computed them
        expected = {**_block(x.astype(np.float64)), **{k: v for k, v in _block(x).items() if k in ("q01", "q99")}}
        for key in stats.STAT_KEYS:
            np.testing.assert_allclose(st[what][key], expected[key], rtol=1e-12, atol=1e-12, err_msg=f"{what} {key}")


def test_bounds_normalization_round_trip_with_gripper_mask():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 7)).astype(np.float32) * [1, 2, 3, 0.1, 0.1, 0.5, 1]
    x[:, 6] = rng.integers(0, 2, 500)  # gripper 0/1
    x[:, 4] = 0.25  # constant dim: q01 == q99
    block = _block(x)
    mask = [True] * 6 + [False]
    norm = Normalizer(block, "bounds_q99", mask)
    y = norm(x)
    assert np.all(np.abs(y[:, :6]) <= 1.0)
    np.testing.assert_array_equal(y[:, 6], x[:, 6])  # gripper untouched
    np.testing.assert_array_equal(y[:, 4], 0.0)  # degenerate dim maps to 0
    inside = np.all((x >= block["q01"]) & (x <= block["q99"]), axis=1)
    assert inside.sum() > 300
    back = norm.inverse(y)
    np.testing.assert_allclose(back[inside], x[inside], atol=1e-5)
    np.testing.assert_allclose(back[:, 4], 0.25, atol=1e-6)


def test_normal_normalization_round_trip_with_mask():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(300, 5)) * [3, 1, 0.01, 2, 1] + [1, -2, 0, 5, 0]).astype(np.float32)
    norm = Normalizer(_block(x), "normal", [True, True, True, False, True])
    y = norm(x)
    np.testing.assert_allclose(y[:, [0, 1, 2, 4]].mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(y[:, [0, 1, 2, 4]].std(0), 1, atol=1e-3)
    np.testing.assert_array_equal(y[:, 3], x[:, 3])
    np.testing.assert_allclose(norm.inverse(y), x, rtol=1e-5, atol=1e-5)


def test_combine_stats_is_transition_weighted():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, (400, 3))
    b = rng.normal(2, 3, (100, 3))
    sa = {"dataset": "a", "num_transitions": 400, "num_trajectories": 4, "action": _block(a), "state": _block(a)}
    sb = {"dataset": "b", "num_transitions": 100, "num_trajectories": 1, "action": _block(b), "state": _block(b)}
    both = np.concatenate([a, b])
    c = combine_stats([sa, sb])
    assert c["num_transitions"] == 500 and c["num_trajectories"] == 5
    np.testing.assert_allclose(c["action"]["mean"], both.mean(0), atol=1e-9)
    np.testing.assert_allclose(c["action"]["std"], both.std(0), atol=1e-9)
    np.testing.assert_allclose(c["action"]["min"], both.min(0))
    np.testing.assert_allclose(c["action"]["max"], both.max(0))
    with pytest.raises(DataError, match="different action dims"):
        combine_stats([sa, {**sb, "action": _block(b[:, :2])}])


def test_stale_and_missing_stats_are_one_clear_line(tabletop_dir, tmp_path):  # noqa: F811
    name = "tabletop_single_arm"
    path = os.path.join(tabletop_dir, "prepared", name)
    stats_dir = str(tmp_path / "stats")
    spec = SPECS[name]
    with pytest.raises(DataError, match="missing; run `python tools/compute_stats.py") as e:
        load_stats(path, name, spec, stats_dir)
    assert "\n" not in str(e.value) and name in str(e.value)
    stats.ensure_stats(path, name, spec, stats_dir, log=lambda *a: None)
    assert load_stats(path, name, spec, stats_dir)["dataset"] == name
    # Changing the standardization spec changes the fingerprint: the cached file is stale.
    changed = dataclasses.replace(spec, action_normalization="normal")
    with pytest.raises(DataError, match="stale") as e:
        load_stats(path, name, changed, stats_dir)
    assert "compute_stats.py" in str(e.value) and "\n" not in str(e.value)
    # ensure_stats(if_missing=True) recomputes only what is stale.
    fresh = stats.ensure_stats(path, name, changed, stats_dir, log=lambda *a: None)
    assert load_stats(path, name, changed, stats_dir)["dataset"] == name
    with open(fresh) as f:
        assert json.load(f)["fingerprint"] in fresh


def test_fingerprint_covers_dataset_identity(tabletop_dir):  # noqa: F811
    spec = SPECS["tabletop_single_arm"]
    a = stats.dataset_fingerprint(os.path.join(tabletop_dir, "prepared", "tabletop_single_arm"), "tabletop_single_arm", spec)
    b = stats.dataset_fingerprint(os.path.join(tabletop_dir, "prepared", "tabletop_bimanual"), "tabletop_single_arm", spec)
    assert a != b and len(a) == 12
    # a metric-only field leaves cached statistics valid; a normalization change does not
    assert dataclasses.replace(spec, action_translation_dims=()).fingerprint() == spec.fingerprint()
    assert dataclasses.replace(spec, action_normalization="normal").fingerprint() != spec.fingerprint()
    with pytest.raises(DataError, match=r"action_translation_dims entry \(0, 1\) must be 3 dims in \[0, 7\)"):
        dataclasses.replace(spec, action_translation_dims=((0, 1),))
    with pytest.raises(DataError, match="action_translation_dims entry"):
        dataclasses.replace(spec, action_translation_dims=((5, 6, 7),))


def test_compute_stats_reports_rate(tabletop_dir):  # noqa: F811
    lines = []
    compute_stats(os.path.join(tabletop_dir, "prepared", "tabletop_single_arm"), "tabletop_single_arm",
                  SPECS["tabletop_single_arm"], log=lines.append)
    assert "transitions/s" in lines[0] and "no image decoding" in lines[0]


def _bridge_copy(tabletop_dir, root, seed):  # noqa: F811
    """Writes the tiny bridge_dataset (6 + 2 episodes) with ``seed`` into ``root`` next to a tokenizer."""
    write_tiny_bridge_dataset(root, seed=seed)
    shutil.copy(os.path.join(tabletop_dir, "tokenizer.model"), os.path.join(root, "tokenizer.model"))
    return make_config(root, "bridge")


def test_dataset_regenerated_with_same_counts_must_be_prepared_again(tabletop_dir, tmp_path):  # noqa: F811
    import tensorflow_datasets as tfds

    root, name = str(tmp_path / "data"), "bridge_dataset"
    config = _bridge_copy(tabletop_dir, root, seed=0)
    stats_dir, spec, path = os.path.join(root, "stats"), SPECS[name], os.path.join(root, "prepared", name)
    prepare_all(config, num_workers=1, progress=False, log=_quiet)
    before = load_stats(path, name, spec, stats_dir)
    lines = []
    compute_all_stats(config, log=lines.append)  # unchanged dataset: the cache is reused
    assert len(lines) == 1 and "up to date" in lines[0] and before["fingerprint"] in lines[0]

    write_tiny_bridge_dataset(root, seed=1)  # in place: other episodes, same split counts
    info = tfds.builder_from_directory(os.path.join(root, name, "1.0.0")).info
    assert info.splits["train"].num_examples == before["num_trajectories"]
    # The trainer's data hookup (before anything is compiled) and compute_stats stop with one line naming
    # the command.
    for call in (make_train_iterator, compute_all_stats):
        with pytest.raises(DataError, match="changed since it was prepared") as e:
            call(config)
        assert "\n" not in str(e.value) and "python tools/prepare_data.py --config=" in str(e.value)
    lines = []
    prepare_all(config, num_workers=1, progress=False, log=lines.append)
    assert any(f"{name}-{before['fingerprint']}.json is stale" in line and "recomputing" in line for line in lines)
    after = load_stats(path, name, spec, stats_dir)
    assert after["fingerprint"] != before["fingerprint"]
    assert after["episode_lengths"] != before["episode_lengths"]
    next(iter(make_train_iterator(config)))


def test_stats_of_another_fingerprint_format_are_stale_and_recomputed(tabletop_dir, tmp_path):  # noqa: F811
    root, name = str(tmp_path / "data"), "bridge_dataset"
    config = _bridge_copy(tabletop_dir, root, seed=0)
    stats_dir, path, spec = os.path.join(root, "stats"), os.path.join(root, "prepared", name), SPECS[name]
    prepare_all(config, num_workers=1, progress=False, log=_quiet)
    current = stats.stats_path(stats_dir, name, stats.dataset_fingerprint(path, name, spec))
    os.rename(current, stats.stats_path(stats_dir, name, "0123456789ab"))  # as written by an older format
    with pytest.raises(DataError, match=f"stale \\({name}-0123456789ab.json was computed for") as e:
        load_stats(path, name, spec, stats_dir)
    assert "\n" not in str(e.value) and "compute_stats.py --config=<your training config> --if_missing" in str(e.value)
    compute_all_stats(config, log=_quiet)  # what `compute_stats --if_missing` runs
    assert load_stats(path, name, spec, stats_dir)["dataset"] == name


def test_source_digest_reads_bounded_windows(tmp_path):
    """The digest of a source file covers its size, head and tail windows: edits there change it, an edit
    in the middle of a large file does not (docs/reliability.md)."""
    data = np.random.default_rng(0).bytes(1_000_000)
    file = tmp_path / "x-train.array_record-00000-of-00001"

    def digest(position=None):
        edited = bytearray(data)
        if position is not None:
            edited[position] ^= 1
        file.write_bytes(bytes(edited))
        return release.content_digest([str(file)])

    base = digest()
    assert digest(500_000) == base
    assert digest(10) != base and digest(len(data) - 10) != base
    file.write_bytes(data + b"x")
    assert release.content_digest([str(file)]) != base
