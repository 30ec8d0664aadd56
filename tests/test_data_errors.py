"""Bad input gives one clear line naming the dataset and the field."""

import dataclasses

import pytest
from data_fixtures import make_config, tabletop_dir  # noqa: F401  (fixture)

from vla_jax.data import SPECS, DataError, make_eval_iterator, make_train_iterator, register_spec


def _error(config, match):
    with pytest.raises(DataError, match=match) as e:
        it = make_train_iterator(config)
        next(it)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_missing_dataset_path_says_how_to_generate(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir)
    config.data.datasets.tabletop_bimanual.dir = "/nonexistent/tabletop_bimanual"
    msg = _error(config, "missing on disk")
    assert "'tabletop_bimanual'" in msg and "tools/generate_data.py" in msg


def test_missing_image_key(tabletop_dir):  # noqa: F811
    register_spec(dataclasses.replace(SPECS["tabletop_single_arm"], name="test_bad_image",
                                      image_keys=("observation/image_0", "observation/wrist", None)))
    config = make_config(tabletop_dir)
    config.data.datasets.tabletop_single_arm.spec = "test_bad_image"
    msg = _error(config, "image key 'observation/wrist'")
    assert "'tabletop_single_arm'" in msg and "image_1" in msg  # lists what is there


def test_action_of_wrong_dimension(tabletop_dir):  # noqa: F811
    register_spec(dataclasses.replace(SPECS["tabletop_single_arm"], name="test_bad_action", action_dim=6,
                                      action_gripper_dims=(5,)))
    config = make_config(tabletop_dir)
    config.data.datasets.tabletop_single_arm.spec = "test_bad_action"
    msg = _error(config, "7-D actions but spec 'test_bad_action' expects 6-D")
    assert "'tabletop_single_arm'" in msg and "['action']" in msg


def test_action_wider_than_max_action_dim(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir)
    config.model.max_action_dim = 7
    msg = _error(config, "max_action_dim=7")
    assert "'tabletop_bimanual'" in msg and "14-D" in msg


def test_weights_sum_to_zero(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir)
    for name in config.data.mixture:
        config.data.mixture[name] = 0.0
    _error(config, "sum to zero")


def test_unknown_dataset_in_mixture(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir)
    config.data.mixture.tabletop_quadruped = 0.5
    msg = _error(config, "'tabletop_quadruped' in config.data.mixture is not defined")
    assert "tabletop_single_arm" in msg


def test_unknown_spec_and_op(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir)
    config.data.datasets.tabletop_web_vl.spec = "laion"
    _error(config, "dataset 'tabletop_web_vl': unknown spec 'laion'")
    config = make_config(tabletop_dir, train_ops=("solarize(0.5)",))
    _error(config, "unknown op 'solarize'")


def test_tokenizer_vocab_checks(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir)
    config.model.vocab_size = 64
    _error(config, "config.model.vocab_size=64")
    config = make_config(tabletop_dir)
    config.model.vocab_size = 300
    config.model.action_head = "discrete"
    msg = _error(config, "reserves the last 256 ids")
    assert ">= " in msg
    config.model.vocab_size = 1024
    next(make_train_iterator(config))  # enough room: no error
    config = make_config(tabletop_dir)
    config.model.addons = ("location_tokens(grid=8, first_id=4)",)
    next(make_train_iterator(config))  # the tokenizers tools/generate_data.py trains: <loc00> is id 4
    config.model.addons = ("location_tokens(grid=8, first_id=5)",)
    msg = _error(config, r"encodes <loc00> as \[4\], but config.model.addons expect \[5\]")
    assert "remove it from config.model.addons" in msg


def test_corrupt_tokenizer_is_one_line(tabletop_dir, tmp_path):  # noqa: F811
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"not a sentencepiece model")
    _error(make_config(tabletop_dir, tokenizer=str(bad)), r"tokenizer .*tokenizer.model is not a SentencePiece model")


def test_openpi_compatible_models_need_the_tokenizer_of_their_weights(tabletop_dir):  # noqa: F811
    """With openpi_semantics the embedding rows are the tokenizer's ids: a tokenizer with fewer pieces than
    config.model.vocab_size (not the one the weights were trained with) is refused in one line."""
    config = make_config(tabletop_dir)
    config.model.openpi_semantics = True
    msg = _error(config, r"has \d+ pieces but config.model.vocab_size=1024: an openpi-compatible model")
    assert "PaliGemma's has 257152" in msg
    pieces = int(msg.split(" has ")[1].split()[0])
    config.model.vocab_size = pieces
    next(make_train_iterator(config))  # the tokenizer's own size: no error


def test_missing_stats_and_tokenizer(tabletop_dir, tmp_path):  # noqa: F811
    config = make_config(tabletop_dir, stats_dir=str(tmp_path / "nostats"))
    msg = _error(config, "normalization stats .* are missing")
    assert "tools/compute_stats.py" in msg
    config = make_config(tabletop_dir, tokenizer=str(tmp_path / "none.model"))
    _error(config, "tokenizer .* does not exist")


def test_eval_unknown_dataset(tabletop_dir):  # noqa: F811
    with pytest.raises(DataError, match="unknown dataset 'bridge_dataset'"):
        make_eval_iterator(make_config(tabletop_dir), "bridge_dataset")


def test_grounding_needs_a_spec_that_records_it(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir)
    name = "tabletop_single_arm"
    register_spec(dataclasses.replace(SPECS[name], name="tabletop_single_arm_ungrounded", grounding_key=None))
    config.data.datasets[name].spec = "tabletop_single_arm_ungrounded"
    with pytest.raises(DataError, match=r"grounding=True but spec 'tabletop_single_arm_ungrounded'.*grounding=False"):
        make_train_iterator(config)


def test_grounding_text_missing_from_the_data(tabletop_dir):  # noqa: F811
    config = make_config(tabletop_dir)
    register_spec(dataclasses.replace(SPECS["tabletop_bimanual"], name="tabletop_bimanual_other_key",
                                      grounding_key="reasoning"))
    config.data.datasets.tabletop_bimanual.spec = "tabletop_bimanual_other_key"
    msg = _error(config, "grounding text 'reasoning' is missing from the steps")
    assert "'tabletop_bimanual'" in msg and "tools/generate_data.py" in msg and "grounding=False" in msg
