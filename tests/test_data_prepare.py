"""The prepare step and the prepared layout: a sample reads only its own step, unprepared or damaged data
is one line naming what to do, a failed run resumes without redoing finished shards, statistics need
no image, progress lines off a terminal."""

import glob
import io
import os
import shutil

import numpy as np
import pytest
from data_fixtures import make_config, tabletop_dir  # noqa: F401  (fixture)

from vla_jax.data import (DataError, compute_all_stats, make_eval_iterator, make_train_iterator, mixture, prepare_all,
                          records, release, write_tiny_bridge_dataset)
from vla_jax.data.norm_stats import compute_stats
from vla_jax.progress import Progress
from vla_jax.data.settings import read_settings
from vla_jax.data.specs import SPECS

NAME = "bridge_dataset"


def _quiet(*args):
    pass


def _bridge(root, tabletop_dir, **kwargs):  # noqa: F811
    """The tiny bridge_dataset as released under ``root`` (+ tokenizer); returns its config."""
    write_tiny_bridge_dataset(str(root), **kwargs)
    shutil.copy(os.path.join(tabletop_dir, "tokenizer.model"), os.path.join(root, "tokenizer.model"))
    return make_config(str(root), "bridge", train_ops=())


class RecordingFiles:
    """A prepared split's real frame files, recording (index, bytes) of every record read through them."""

    def __init__(self, files):
        self.files, self.reads = files, []

    def __getitem__(self, index):
        record = self.files[index]
        self.reads.append((index, len(record)))
        return record


@pytest.mark.parametrize("length", [4, 60])
def test_a_sample_reads_one_frame_record_whatever_the_episode_length(tmp_path, tabletop_dir, length):  # noqa: F811
    config = _bridge(tmp_path, tabletop_dir, num_episodes=3, num_val_episodes=1, episode_length=length,
                     file_format="tfrecord")
    prepare_all(config, num_workers=1, progress=False, log=_quiet)
    src = mixture.build_source(read_settings(config), NAME, 0, split="train").source
    src.split.frames = RecordingFiles(src.split.frames)
    source = release.open_release(os.path.join(tmp_path, NAME), NAME)
    episodes = [release.Episode(r, NAME) for s in source.splits["train"] for r in release.iter_records(s, "tfrecord", NAME)]
    for index in (0, length - 1, length + 1, len(src) - 1):
        src.split.frames.reads.clear()
        sample = src[index]
        e, t = src.locate(index)
        g = int(src.split.offsets[e]) + t
        ((read, size),) = src.split.frames.reads  # exactly one record: this step's frame
        assert read == g
        frame = records.parse_record(src.split.frames.files[g])
        assert (frame["episode"].int64_list.value[0], frame["step"].int64_list.value[0]) == (e, t)
        image = episodes[e].values("observation/image_0")[t]
        assert sample["images"][0] == image and size < len(image) + len(episodes[e].values("observation/image_1")[t])
        spec = SPECS[NAME]
        np.testing.assert_array_equal(sample["state"], spec.state_rows(episodes[e].column, length, t, t + 1)[0])
        np.testing.assert_array_equal(sample["actions"],
                                      spec.action_rows(episodes[e].column, length, t, t + sample["num_steps"]))
        assert sample["num_steps"] == min(8, length - t)


def test_unprepared_dataset_is_one_line_naming_the_command(tmp_path, tabletop_dir):  # noqa: F811
    config = _bridge(tmp_path, tabletop_dir, num_episodes=2, num_val_episodes=1, file_format="tfrecord")
    for call in (make_train_iterator, compute_all_stats, lambda c: make_eval_iterator(c, NAME)):
        with pytest.raises(DataError, match="no prepared copy at") as e:
            call(config)
        assert "\n" not in str(e.value) and f"'{NAME}'" in str(e.value)
        assert "run `python tools/prepare_data.py --config=<your training config>`" in str(e.value)


def _corrupt(file: str) -> bytes:
    """Flips one byte inside the first record's data; returns the original bytes."""
    with open(file, "rb") as f:
        original = f.read()
    damaged = bytearray(original)
    damaged[100] ^= 0xFF
    with open(file, "wb") as f:
        f.write(bytes(damaged))
    return original


def test_damaged_shard_is_one_line_and_the_rerun_resumes(tmp_path, tabletop_dir):  # noqa: F811
    config = _bridge(tmp_path / "data", tabletop_dir, num_episodes=6, num_val_episodes=3, file_format="tfrecord",
                     num_shards=3)
    train = sorted(glob.glob(str(tmp_path / "data" / NAME / "1.0.0" / f"{NAME}-train.tfrecord-*")))
    original = _corrupt(train[-1])
    with pytest.raises(DataError, match=r"is damaged \(corrupted record at \d+\); download this file again") as e:
        prepare_all(config, num_workers=1, progress=False, log=_quiet)
    assert "\n" not in str(e.value) and train[-1] in str(e.value)
    partial = tmp_path / "data" / "prepared" / f"{NAME}.partial" / "train"
    finished = {f: os.stat(partial / f).st_mtime_ns for f in ("frames-00000.array_record", "frames-00001.array_record")}
    assert not (partial / "frames-00002.array_record").exists()

    with open(train[-1], "wb") as f:
        f.write(original)
    lines = []
    prepare_all(config, num_workers=1, progress=False, log=lines.append)
    assert any("6 shards, 2 already done" in line for line in lines), lines
    prepared = tmp_path / "data" / "prepared" / NAME
    assert {f: os.stat(prepared / "train" / f).st_mtime_ns for f in finished} == finished  # not redone
    lines = []
    prepare_all(config, num_workers=1, progress=False, log=lines.append)
    assert lines[0] == f"[prepare] {NAME}: up to date ({prepared})"

    # The resumed copy is the one an uninterrupted run (in worker processes) writes.
    fresh = config.copy_and_resolve_references()
    fresh.data.prepared_dir, fresh.data.stats_dir = str(tmp_path / "fresh"), str(tmp_path / "fresh_stats")
    prepare_all(fresh, num_workers=2, progress=False, log=_quiet)  # one process per shard
    files = sorted(os.path.relpath(p, prepared) for p in glob.glob(str(prepared / "*" / "*")))
    assert files == sorted(os.path.relpath(p, tmp_path / "fresh" / NAME)
                           for p in glob.glob(str(tmp_path / "fresh" / NAME / "*" / "*")))
    for file in files + ["manifest.json"]:
        assert _content(prepared / file) == _content(tmp_path / "fresh" / NAME / file), file


def _content(path) -> list[bytes]:
    """The records of an array_record file (its header differs between writes), else the file's bytes."""
    if str(path).endswith(".array_record"):
        from array_record.python.array_record_module import ArrayRecordReader

        reader = ArrayRecordReader(str(path))
        content = reader.read_all()
        reader.close()
        return content
    with open(path, "rb") as f:
        return [f.read()]


def test_statistics_read_no_frame(tabletop_dir, tmp_path):  # noqa: F811
    """Statistics come from the numeric columns alone: the same without any frame file."""
    name = "tabletop_single_arm"
    copy = tmp_path / name
    shutil.copytree(os.path.join(tabletop_dir, "prepared", name), copy)
    for frames in glob.glob(str(copy / "*" / "frames-*.array_record")):
        os.remove(frames)
    with_frames = compute_stats(os.path.join(tabletop_dir, "prepared", name), name, SPECS[name], log=_quiet)
    without = compute_stats(str(copy), name, SPECS[name], log=_quiet)
    for key in ("num_transitions", "action", "state", "episode_lengths"):
        assert with_frames[key] == without[key]


def test_progress_prints_plain_lines_off_a_terminal():
    stream = io.StringIO()
    progress = Progress("[prepare] x", total=4, unit="episodes", rate_of="transitions", stream=stream,
                        interval=0.0)
    for _ in range(4):
        progress.update(1, 25)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in stream.getvalue()
    assert lines[1].startswith("[prepare] x: 2/4 episodes (50%), 50 transitions, ") and "transitions/s, ETA 0:" in lines[1]
