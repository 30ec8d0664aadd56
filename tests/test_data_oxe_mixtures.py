"""Named Open X-Embodiment mixtures: published weights, spec consistency, conversions, missing datasets.

Datasets are tiny ones written in the step layouts of the real OXE releases (vla_jax.data.oxe_specs.STEP_FEATURES,
vla_jax.data.builders.write_tiny_oxe_dataset); nothing is downloaded.
"""

import math
import os
import zlib

import numpy as np
import pytest
from data_fixtures import load_mixtures_module, make_config

from vla_jax.batch import check_batch
from vla_jax.data import (SPECS, DataError, RobotSpec, Tokenizer, columns, compute_all_stats, load_stats,
                          make_eval_iterator, make_train_iterator, train_tokenizer, visualize, write_tiny_oxe_dataset)
from vla_jax.data.oxe_specs import STEP_FEATURES
from vla_jax.data.settings import read_settings

OXE_MIXTURES = ("oxe_magic_soup", "oxe_magic_soup_plus", "oxe_magic_soup_plus_minus")

# Published weights (Octo: octo/data/oxe/oxe_dataset_mixes.py OXE_MAGIC_SOUP; OpenVLA:
# prismatic/vla/datasets/rlds/oxe/mixtures.py, whose bridge_orig / fmb_dataset are bridge_dataset / fmb here).
PUBLISHED = (
    ("oxe_magic_soup", "fractal20220817_data", 0.54087122203),
    ("oxe_magic_soup", "kuka", 0.8341046294),
    ("oxe_magic_soup", "bridge_dataset", 1.0),
    ("oxe_magic_soup", "taco_play", 2.0),
    ("oxe_magic_soup", "nyu_door_opening_surprising_effectiveness", 1.0),
    ("oxe_magic_soup", "language_table", 0.1),
    ("oxe_magic_soup", "nyu_franka_play_dataset_converted_externally_to_rlds", 3.0),
    ("oxe_magic_soup", "furniture_bench_dataset_converted_externally_to_rlds", 0.1),
    ("oxe_magic_soup", "bc_z", 0.2),
    ("oxe_magic_soup", "berkeley_fanuc_manipulation", 2.0),
    ("oxe_magic_soup_plus", "fractal20220817_data", 0.54087122203),
    ("oxe_magic_soup_plus", "bc_z", 0.2),
    ("oxe_magic_soup_plus", "fmb", 1.0),
    ("oxe_magic_soup_plus", "dobbe", 0.2),
    ("oxe_magic_soup_plus", "droid", 0.06),
    ("oxe_magic_soup_plus_minus", "fractal20220817_data", 1.0),
    ("oxe_magic_soup_plus_minus", "kuka", 0.8341046294),
    ("oxe_magic_soup_plus_minus", "dobbe", 0.2),
)
SIZES = {"oxe_magic_soup": 25, "oxe_magic_soup_plus": 27, "oxe_magic_soup_plus_minus": 25}
ABSENT = {"oxe_magic_soup": ("fmb", "dobbe", "droid"),
          "oxe_magic_soup_plus": ("nyu_door_opening_surprising_effectiveness",),
          "oxe_magic_soup_plus_minus": ("nyu_door_opening_surprising_effectiveness", "language_table", "droid")}


def test_published_weights_and_weight_shares(tmp_path):
    mixtures = load_mixtures_module().MIXTURES
    for mixture, dataset, weight in PUBLISHED:
        assert mixtures[mixture]["weights"][dataset] == weight, (mixture, dataset)
    for mixture in OXE_MIXTURES:
        weights = mixtures[mixture]["weights"]
        assert len(weights) == SIZES[mixture] and not set(ABSENT[mixture]) & set(weights)
        config = make_config(str(tmp_path), mixture)
        assert config.data.balance_by_size and not config.data.drop_missing
        assert {n: d.spec for n, d in config.data.datasets.items()} == {n: n for n in weights}
        assert all(isinstance(SPECS[n], RobotSpec) for n in weights)
        assert read_settings(config).missing.keys() == weights.keys()  # nothing is on disk in tmp_path
        table = visualize.mixture_table(config, sizes=False)  # weights only: reads no data
        total = sum(weights.values())
        for name, weight in weights.items():
            line = next(row for row in table.splitlines() if row.startswith(name + " "))
            assert f"{100 * weight / total:.2f}%" in line, line
    print(visualize.mixture_table(make_config(str(tmp_path), "oxe_magic_soup"), sizes=False))
    assert math.isclose(sum(mixtures["oxe_magic_soup"]["weights"].values()), 30.77497585143)


def _width(desc: str) -> int:
    """Values per step of a numeric STEP_FEATURES description ("float32 7", "zlib float32 7", "bool", ...)."""
    return math.prod(int(w) for w in desc.split() if w.isdigit())


def _one_step_column(layout: dict):
    """step key -> the raw values of a one-step episode in ``layout`` (zeros; text "pick")."""

    def column(key):
        desc = layout[key]
        if desc.split()[0] in ("image", "text"):
            return [b"pick"]
        if desc.startswith("zlib"):
            return [zlib.compress(np.zeros(_width(desc), np.float32).tobytes())]
        if desc.startswith("codes"):
            return [ord(c) for c in "pick"] + [0] * (_width(desc) - 4)
        return [0.0] * _width(desc)

    return column


def _index_sets(exprs, layout) -> list[tuple[str, set]]:
    """(step key, indices of its last axis) read by each expression."""
    return [(key.path, set(range(_width(layout[key.path]))[key.start:key.stop]))
            for expr in exprs for key in columns.keys(expr)]


def test_every_oxe_spec_reads_its_layout_once_and_dims_add_up():
    mixtures = load_mixtures_module().MIXTURES
    assert set(STEP_FEATURES) == {n for m in OXE_MIXTURES for n in mixtures[m]["weights"]}  # 28 datasets
    for name, layout in STEP_FEATURES.items():
        spec = SPECS[name]
        assert set(spec.step_keys()) == set(layout), name  # the layout lists exactly what the spec reads
        cameras = [k for k in spec.image_keys if k is not None]
        assert cameras and len(set(cameras)) == len(cameras) and spec.image_keys[2] is None, name
        assert all(layout[k].startswith("image") for k in cameras), name
        for what, exprs in (("action", spec.action_keys), ("state", spec.state_keys)):
            sets = _index_sets(exprs, layout)
            for i, (path, used) in enumerate(sets):
                assert used, (name, what, path)  # an empty slice reads nothing
                for other_path, other in sets[i + 1:]:
                    assert path != other_path or not used & other, f"{name}: {what} reads {path} twice"
        column = _one_step_column(layout)
        assert spec.action_dim == 7 and spec.action_rows(column, 1).shape == (1, 7), name
        assert spec.state_rows(column, 1).shape == (1, spec.state_dim), name
        assert spec.instruction(column, 1, 0) == "pick", name
        assert spec.action_gripper_dims == (6,) and spec.action_translation_dims == ((0, 1, 2),), name
    for spec in SPECS.values():  # every robot spec, OXE or not: no key named twice
        if isinstance(spec, RobotSpec):
            named = [k for k in spec.image_keys if k] + list(spec.state_keys) + list(spec.action_keys)
            assert len(set(named)) == len(named), spec.name


def _quat_from_rpy(roll, pitch, yaw):
    """(x, y, z, w) of R = Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = (f(a / 2) for a in (roll, pitch, yaw) for f in (math.cos, math.sin))
    return [sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy, cr * cp * sy - sr * sp * cy,
            cr * cp * cy + sr * sp * sy]


def test_named_conversions_match_octo():
    fn = {name: f.fn for name, f in columns.COLUMN_FNS.items()}
    col = lambda values: np.asarray(values, np.float32)[:, None]  # noqa: E731
    # rel2abs: +1 close, -1 open, 0 keep -> 1 open / 0 closed; before the first command, its opposite.
    np.testing.assert_array_equal(fn["rel2abs_gripper"](col([0, 0, 1, 0, -1, 0]))[:, 0], [1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(fn["rel2abs_gripper"](col([0, -1, 0]))[:, 0], [0, 1, 1])
    np.testing.assert_array_equal(fn["rel2abs_gripper"](col([0, 0]))[:, 0], [1, 1])  # no command: open
    # binarize: in-between values take the next settled one; a trailing in-between run keeps the last value.
    np.testing.assert_array_equal(fn["binarize_gripper"](col([0, 0.5, 1, 0.97, 0.3, 0.02]))[:, 0], [0, 1, 1, 1, 0, 0])
    np.testing.assert_allclose(fn["binarize_gripper"](col([1, 0.5]))[:, 0], [1, 0.5])
    np.testing.assert_array_equal(fn["invert_gripper"](fn["clip01"](col([-1, 0.25, 2])))[:, 0], [1, 0.75, 0])
    for rpy in ((0.0, 0.0, math.pi / 2), (0.3, -0.7, 2.5), (-2.0, 1.2, -0.4)):
        np.testing.assert_allclose(fn["euler_from_quat"](np.asarray([_quat_from_rpy(*rpy)], np.float32))[0], rpy,
                                   atol=1e-5)
    raw = [zlib.compress(np.arange(3, dtype=np.float32).tobytes())] * 2
    np.testing.assert_array_equal(fn["zlib_float32"](np.asarray(raw, dtype=object)), [[0, 1, 2], [0, 1, 2]])
    assert fn["text_from_codes"](np.asarray([[ord(c) for c in "push it"] + [0] * 5], np.float32)) == "push it"
    # Slices, constants and episode-wide conversions on the requested steps only.
    flat = {"a": list(range(12)), "g": [0.0, 1.0, 0.0, -1.0]}  # 4 steps: a is 3 wide
    rows = columns.rows(("a[-2:]", "zeros(1)", "rel2abs_gripper(g)"), flat.__getitem__, 4, 2, 4)
    np.testing.assert_array_equal(rows, [[7, 8, 0, 0], [10, 11, 0, 1]])
    assert columns.rows((), flat.__getitem__, 4, 1, 3).shape == (2, 0)


def test_bad_column_expressions_are_one_line():
    for expr, match in (("flip(action)", "unknown conversion 'flip'"), ("action[1]", "is not a step key"),
                        ("zeros(x)", r"zeros\(N\) needs a width"),
                        ("text_from_codes(observation/instruction)", "makes text, usable only as the instruction")):
        with pytest.raises(DataError, match=match) as e:
            RobotSpec(name="bad", image_keys=("image", None, None), state_keys=(), action_keys=(expr,),
                      instruction_key="language_instruction", action_dim=1, state_dim=0, control_hz=1.0)
        assert str(e.value).startswith("spec 'bad': ") and "\n" not in str(e.value)
    with pytest.raises(DataError, match="instruction 'clip01.language_instruction.' must be a text step key"):
        RobotSpec(name="bad", image_keys=("image", None, None), state_keys=(), action_keys=("action",),
                  instruction_key="clip01(language_instruction)", action_dim=1, state_dim=0, control_hz=1.0)


def _tokenizer(out: str) -> None:
    train_tokenizer([f"task {e}" for e in (*range(10), *range(10_000, 10_004))], os.path.join(out, "tokenizer.model"),
                    vocab_size=60, log=lambda *a: None)


RELATIVE_GRIPPER = [0, 0, 1, 0, -1, 0]  # fractal's gripper_closedness_action per step -> absolute 1 1 0 0 1 1
EPISODES = {"language_table": 6}  # train episodes of 6 steps (3 for the others): sizes differ for balance_by_size


@pytest.fixture(scope="module")
def few_oxe_dir(tmp_path_factory):
    """Four datasets of oxe_magic_soup in their release layouts (values chosen where a conversion is checked)."""
    out = str(tmp_path_factory.mktemp("oxe_few"))
    quarter_turn = np.asarray(_quat_from_rpy(0.0, 0.0, math.pi / 2), np.float32)
    overrides = {
        "fractal20220817_data": {"action/gripper_closedness_action":
                                 lambda e, s: np.float32([RELATIVE_GRIPPER[s]])},
        "kuka": {"observation/clip_function_input/base_pose_tool_reached": lambda e, s: np.full(7, s, np.float32),
                 "observation/gripper_closed": lambda e, s: np.float32([e])},
        "iamlab_cmu_pickup_insert_converted_externally_to_rlds": {
            "action": lambda e, s: np.concatenate([np.zeros(3), quarter_turn, [s % 2]]).astype(np.float32)},
        "language_table": {},
    }
    for name, values in overrides.items():
        write_tiny_oxe_dataset(out, name, values=values, num_episodes=EPISODES.get(name, 3))
    _tokenizer(out)
    return out


def test_missing_datasets_are_one_line_then_dropped_with_renormalized_shares(few_oxe_dir):
    config = make_config(few_oxe_dir, "oxe_magic_soup", train_ops=())
    present = {"fractal20220817_data", "kuka", "iamlab_cmu_pickup_insert_converted_externally_to_rlds",
               "language_table"}
    missing = set(config.data.mixture) - present
    for call in (lambda: make_train_iterator(config), lambda: compute_all_stats(config, log=lambda *a: None),
                 lambda: visualize.mixture_table(config)):
        with pytest.raises(DataError, match="^21 of 25 datasets of config.data.mixture missing on disk: ") as e:
            call()
        message = str(e.value)
        assert "\n" not in message and "config.data.drop_missing=True" in message
        assert all(f"'{n}'" in message for n in missing) and not any(f"'{n}'" in message for n in present)

    config.data.drop_missing = True
    logged = []
    compute_all_stats(config, log=logged.append)
    assert ("config.data.drop_missing: left out 21 of 25 datasets missing on disk (" in logged[0]
            and logged[0].endswith("weights renormalized over the other 4"))
    table = visualize.mixture_table(config)
    print(table)
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:5]}
    assert set(rows) == present
    weights = {n: w for n, w in load_mixtures_module().OXE_MAGIC_SOUP if n in present}
    sizes = {n: 6 * EPISODES.get(n, 3) for n in present}
    balanced = {n: weights[n] * sizes[n] for n in present}
    for name, row in rows.items():  # weight% renormalized over the 4; share = weight x transitions, renormalized
        assert row[3] == f"{100 * weights[name] / sum(weights.values()):.2f}%" and row[5] == str(sizes[name])
        assert row[6] == f"{100 * balanced[name] / sum(balanced.values()):.2f}%"
    assert table.splitlines()[-1] == logged[0]

    it = make_train_iterator(config)
    batch = next(it)
    it.close()
    check_batch(batch, config.model)
    assert (batch["action_dim_mask"].sum(1) == 7).all()

    st = load_stats(os.path.join(few_oxe_dir, "kuka"), "kuka", SPECS["kuka"], os.path.join(few_oxe_dir, "stats"))
    np.testing.assert_allclose(st["state"]["mean"], [2.5] * 7 + [1.0], atol=1e-6)  # zlib state decoded
    name = "iamlab_cmu_pickup_insert_converted_externally_to_rlds"
    st = load_stats(os.path.join(few_oxe_dir, name), name, SPECS[name], os.path.join(few_oxe_dir, "stats"))
    np.testing.assert_allclose(st["action"]["mean"][3:6], [0, 0, math.pi / 2], atol=1e-5)  # quaternion -> Euler

    fractal = next(make_eval_iterator(config, "fractal20220817_data", batch_size=6))
    np.testing.assert_array_equal(fractal["actions"][0, :6, 6], [1, 1, 0, 0, 1, 1])  # raw gripper dim, absolute
    table_batch = next(make_eval_iterator(config, "language_table", batch_size=6))
    np.testing.assert_array_equal(table_batch["actions"][0, :6, 2:7], np.tile([0, 0, 0, 0, 1], (6, 1)))
    assert (table_batch["state_mask"].sum(1) == 2).all()
    tokenizer = Tokenizer(os.path.join(few_oxe_dir, "tokenizer.model"))
    tokens = table_batch["tokens"][0][table_batch["token_mask"][0] & ~table_batch["token_ar"][0]][1:]  # after bos
    assert tokenizer.decode(tokens.tolist()) == "task 10000"  # code points of the val episode's instruction


def test_every_oxe_layout_trains(tmp_path):
    """All 28 datasets of the three mixtures in their release layouts: statistics and a batch per mixture."""
    out = str(tmp_path)
    for name in STEP_FEATURES:
        write_tiny_oxe_dataset(out, name, num_episodes=2, num_val_episodes=1, num_steps=4)
    _tokenizer(out)
    for mixture in OXE_MIXTURES:
        config = make_config(out, mixture, batch_size=32, train_ops=())
        compute_all_stats(config, log=lambda *a: None)
        it = make_train_iterator(config)
        batch = next(it)
        it.close()
        check_batch(batch, config.model)
        names = list(read_settings(config).mixture)
        for i, source in enumerate(batch["source"]):
            spec = SPECS[names[source]]
            assert batch["state_mask"][i].sum() == spec.state_dim and batch["action_dim_mask"][i].sum() == 7
            assert batch["image_mask"][i].tolist() == [k is not None for k in spec.image_keys]
