"""openpi semantics of the data layer: prompt formats (plain / pi0 / pi05) pinned to exact token ids of a
tiny trained SentencePiece model, and the resize_with_pad image op against hand-computed images."""

import numpy as np
import pytest
from data_fixtures import make_config, tabletop_dir  # noqa: F401  (fixture)

from vla_jax.data import DataError, make_eval_iterator, make_policy_io, prompts
from vla_jax.data.settings import read_settings
from vla_jax.data.tokenizer import Tokenizer, train_tokenizer
from vla_jax.data.transforms import OpContext, build_ops, build_tokens, finalize_batch

CORPUS = ["pick up the red block", "put the blue cup on the plate", "open the top drawer",
          "Task: pick up the red block, State: 0 64 127 128 191 255;\nAction: "]
PROMPT = "  Pick_up the red\nblock "
STATE = np.array([-1.0, -0.5, -0.004, 0.0, 0.5, 1.0, -1.5], np.float32)


@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    """A 48-piece unigram model with "\\n" as a piece (as in the PaliGemma tokenizer)."""
    path = str(tmp_path_factory.mktemp("prompts") / "tiny.model")
    return Tokenizer(train_tokenizer(CORPUS, path, vocab_size=60, symbols=("\n",), log=lambda *a: None))


def test_pi05_prompt_string_and_state_bins():
    np.testing.assert_array_equal(prompts.discretize_state(STATE), [0, 64, 127, 128, 192, 255, -1])
    assert prompts.clean_text(PROMPT) == "Pick up the red block"
    assert prompts.pi05_text(PROMPT, STATE) == "Task: Pick up the red block, State: 0 64 127 128 192 255 -1;\nAction: "


def test_prompt_formats_give_pinned_token_ids(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.vocab_size == 48 and tok.bos_id == 2 and tok.encode("\n") == [4]
    assert prompts.prompt_ids(tok, "plain", PROMPT, STATE) == [
        2, 3, 15, 24, 3, 10, 7, 8, 9, 6, 5, 11, 6, 14, 4, 45, 39, 46, 24]
    assert prompts.prompt_ids(tok, "pi0", PROMPT) == [2, 3, 15, 24, 5, 10, 7, 8, 9, 6, 5, 11, 6, 14, 20, 4]
    assert prompts.prompt_ids(tok, "pi05", PROMPT, STATE) == [
        2, 44, 17, 40, 27, 13, 5, 3, 15, 24, 5, 10, 7, 8, 9, 6, 5, 11, 6, 14, 20, 30, 5, 43, 12, 23, 13, 5, 31,
        5, 33, 32, 22, 34, 22, 35, 47, 36, 28, 5, 28, 18, 18, 5, 3, 26, 37, 4, 38, 16, 12, 15, 19, 13]
    # the plain format is what vla_jax always did: bos + the instruction as given
    assert prompts.prompt_ids(tok, "plain", PROMPT) == [tok.bos_id] + tok.encode(PROMPT)


def test_prompt_tokens_are_padded_and_truncated_like_openpi(tiny_tokenizer):
    tok = tiny_tokenizer
    tokens, mask, ar, loss = build_tokens(tok, PROMPT, None, 20, "pi0")
    np.testing.assert_array_equal(tokens, [2, 3, 15, 24, 5, 10, 7, 8, 9, 6, 5, 11, 6, 14, 20, 4, 0, 0, 0, 0])
    np.testing.assert_array_equal(mask, [True] * 16 + [False] * 4)
    assert not ar.any() and not loss.any()  # prefix: bidirectional, no text loss
    tokens, mask, _, _ = build_tokens(tok, PROMPT, None, 12, "pi05", STATE)
    np.testing.assert_array_equal(tokens, [2, 44, 17, 40, 27, 13, 5, 3, 15, 24, 5, 10])  # first max_len kept
    assert mask.all()


def test_prompt_format_errors_are_one_line(tiny_tokenizer, tmp_path):
    with pytest.raises(DataError, match=r"^unknown config.data.prompt_format='pi1'; choose one of plain, pi0, pi05$"):
        read_settings(make_config(str(tmp_path), prompt_format="pi1"))
    with pytest.raises(DataError, match="has no state"):
        prompts.prompt_ids(tiny_tokenizer, "pi05", PROMPT)
    assert read_settings(make_config(str(tmp_path))).prompt_format == "plain"  # the presets' default


def _pad(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    (op,) = build_ops(["resize_with_pad"], OpContext(image_size=size, num_cameras=1))
    sample = op({"images": [Image.fromarray(image)]}, np.random.default_rng(0))
    return np.asarray(sample["images"][0])


def test_resize_with_pad_keeps_aspect_and_centers_with_black():
    tall = np.arange(1, 4 * 2 * 3 + 1, dtype=np.uint8).reshape(4, 2, 3)  # h=4, w=2: fits, pad 1 column each side
    want = np.zeros((4, 4, 3), np.uint8)
    want[:, 1:3] = tall
    np.testing.assert_array_equal(_pad(tall, 4), want)
    wide = np.full((2, 4, 3), 200, np.uint8)  # h=2, w=4: pad 1 row above and below
    want = np.zeros((4, 4, 3), np.uint8)
    want[1:3] = 200
    np.testing.assert_array_equal(_pad(wide, 4), want)
    thin = np.full((4, 1, 3), 9, np.uint8)  # odd padding: 1 column left, 2 right (openpi's split)
    want = np.zeros((4, 4, 3), np.uint8)
    want[:, 1] = 9
    np.testing.assert_array_equal(_pad(thin, 4), want)
    small = np.full((1, 2, 3), 77, np.uint8)  # upscaled x2 to h=2, w=4, then rows 1..2
    want = np.zeros((4, 4, 3), np.uint8)
    want[1:3] = 77
    np.testing.assert_array_equal(_pad(small, 4), want)
    # black bars are -1 in the model's [-1, 1] images, the image's 255 is 1
    full = np.full((4, 2, 3), 255, np.uint8)
    images = finalize_batch({"images": _pad(full, 4)[None, None], "image_mask": np.ones((1, 1), bool)})["images"]
    np.testing.assert_array_equal(images[0, 0, :, [0, 3]], -1.0)
    np.testing.assert_array_equal(images[0, 0, :, 1:3], 1.0)


def test_policy_io_and_eval_pipeline_use_the_configured_format(tabletop_dir):  # noqa: F811
    from vla_jax.sim import TabletopEnv, sample_task

    config = make_config(tabletop_dir, "single_arm_only", prompt_format="pi05", eval_ops=("resize_with_pad",))
    io = make_policy_io(config, "tabletop_single_arm")
    task = sample_task(np.random.default_rng(3))
    obs = TabletopEnv("single_arm", 96).reset(task, 3)
    batch = io.observation(obs, task.instruction)
    want = build_tokens(io.transform.tokenizer, task.instruction, None, config.model.max_text_len, "pi05",
                        io.state_norm(obs["state"]))
    np.testing.assert_array_equal(batch["tokens"][0], want[0])
    np.testing.assert_array_equal(batch["token_mask"][0], want[1])
    pi05 = next(make_eval_iterator(config, "tabletop_single_arm"))["tokens"]
    plain = next(make_eval_iterator(make_config(tabletop_dir, "single_arm_only"), "tabletop_single_arm"))["tokens"]
    assert pi05.shape == plain.shape and not np.array_equal(pi05, plain)
