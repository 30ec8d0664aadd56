"""Prompt formats: how a robot instruction (and, for pi0.5, the state) becomes prompt token ids.

One function, :func:`prompt_ids`, serves training (vla_jax/data/transforms.py) and online inference
(vla_jax/data/policy_io.py goes through the same transform), chosen by ``config.data.prompt_format``:

``plain``  bos + instruction, as given.
``pi0``    openpi's pi0: bos + cleaned instruction, then "\\n" encoded on its own (the start-of-answer
           token). Cleaning strips surrounding whitespace and replaces "_" and "\\n" by spaces; case is kept.
``pi05``   openpi's pi0.5: bos + ``"Task: {cleaned}, State: {bins};\\nAction: "``, where ``bins`` is the
           normalized state discretized into 256 bins of [-1, 1] (:func:`discretize_state`), joined by spaces.

Any SentencePiece model works (the PaliGemma tokenizer reproduces openpi's ids); a model without a
"\\n" piece encodes the newline however its normalizer does (often to nothing).
"""

from __future__ import annotations

import numpy as np

from vla_jax.data.errors import DataError

PROMPT_FORMATS = ("plain", "pi0", "pi05")
STATE_BINS = 256


def check_prompt_format(name: str) -> str:
    """Returns ``name`` if it is a known prompt format; one-line DataError naming the choices otherwise."""
    if name not in PROMPT_FORMATS:
        raise DataError(f"unknown config.data.prompt_format={name!r}; choose one of {', '.join(PROMPT_FORMATS)}")
    return name


def clean_text(text: str) -> str:
    """openpi's prompt cleaning: strip, then "_" and "\\n" become spaces (case unchanged)."""
    return text.strip().replace("_", " ").replace("\n", " ")


def discretize_state(state: np.ndarray) -> np.ndarray:
    """Normalized state [S] -> int bins [S]: ``digitize(state, linspace(-1, 1, 257)[:-1]) - 1``.

    Values in [-1, 1) land in 0..255 and 1 or more in 255; values below -1 give -1, as in openpi.
    """
    edges = np.linspace(-1.0, 1.0, STATE_BINS + 1)[:-1]
    return np.digitize(np.asarray(state, np.float64).ravel(), bins=edges) - 1


def pi05_text(prompt: str, state: np.ndarray) -> str:
    """The pi0.5 prompt string before tokenization (``state`` normalized to [-1, 1])."""
    bins = " ".join(str(int(b)) for b in discretize_state(state))
    return f"Task: {clean_text(prompt)}, State: {bins};\nAction: "


def prompt_ids(tokenizer, prompt_format: str, prompt: str, state: np.ndarray | None = None) -> list[int]:
    """Token ids of a prompt in ``prompt_format`` (bos first); ``state`` is required by "pi05" only."""
    check_prompt_format(prompt_format)
    if prompt_format == "plain":
        return tokenizer.encode(prompt, bos=True)
    if prompt_format == "pi0":
        return tokenizer.encode(clean_text(prompt), bos=True) + tokenizer.encode("\n")
    if state is None:
        raise DataError("prompt_format 'pi05' puts the state in the prompt but this example has no state")
    return tokenizer.encode(pi05_text(prompt, state), bos=True)
