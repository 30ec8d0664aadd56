"""SentencePiece tokenizer: a wrapper for any ``.model`` file, and training of the tiny default one.

Special ids of the tokenizers trained here follow Gemma/PaliGemma: pad 0, eos 1, bos 2, unk 3.
Any other SentencePiece model (e.g. the 257,152-piece PaliGemma tokenizer) works as is.
"""

from __future__ import annotations

import glob
import os
from typing import Sequence

from vla_jax.data import records, release
from vla_jax.data.errors import DataError

DISCRETE_ACTION_BINS = 256  # the last 256 ids of the model vocabulary are action bins (OpenVLA / RT-2)
CORPUS_FILE = "tokenizer_corpus.txt"


class Tokenizer:
    """Thin, picklable wrapper around a SentencePiece model file."""

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise DataError(
                f"tokenizer {path} does not exist; train one with `python tools/train_tokenizer.py "
                f"--corpus_from=DATA_DIR --out={path}` (tools/generate_data.py does this) or set config.data.tokenizer"
            )
        self.path = path
        with open(path, "rb") as f:
            self._proto = f.read()
        self._sp = self._load()  # parsed now: a corrupt file fails here, in one line

    def _load(self):
        import sentencepiece as spm

        try:
            return spm.SentencePieceProcessor(model_proto=self._proto)
        except (RuntimeError, OSError) as e:
            raise DataError(f"tokenizer {self.path} is not a SentencePiece model ({str(e).splitlines()[0]}); "
                            "point config.data.tokenizer at a .model file") from None

    @property
    def sp(self):
        if self._sp is None:  # unpickled in a worker
            self._sp = self._load()
        return self._sp

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_sp"] = None
        return state

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def pad_id(self) -> int:
        return max(self.sp.pad_id(), 0)

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self.sp.encode(text)
        if bos and self.bos_id >= 0:
            ids = [self.bos_id] + ids
        if eos and self.eos_id >= 0:
            ids = ids + [self.eos_id]
        return ids

    def decode(self, ids) -> str:
        return self.sp.decode([int(i) for i in ids])


def check_tokenizer(tokenizer: Tokenizer, vocab_size: int, action_head: str,
                    required_tokens: Sequence[tuple[str, int]] = (), exact_vocab: bool = False) -> None:
    """Start-up check of the tokenizer against the model embedding (and that each ``(piece, id)`` of
    ``required_tokens``, what the model's add-ons expect, is that single id); one clear line on mismatch.
    ``exact_vocab`` (openpi-compatible models): the tokenizer has exactly ``vocab_size`` pieces, as the one the
    weights were trained with (PaliGemma's: 257,152)."""
    for piece, want in required_tokens:
        if tokenizer.encode(piece) != [want]:
            raise DataError(
                f"tokenizer {tokenizer.path} encodes {piece} as {tokenizer.encode(piece)}, but config.model.addons "
                f"expect [{want}]; give the add-on the tokenizer's ids (a tokenizer trained by "
                f"tools/generate_data.py has <loc00> = 4) or remove it from config.model.addons")
    pieces = tokenizer.vocab_size
    if exact_vocab and pieces != vocab_size:
        raise DataError(
            f"tokenizer {tokenizer.path} has {pieces} pieces but config.model.vocab_size={vocab_size}: an "
            f"openpi-compatible model (config.model.openpi_semantics) reads token i from embedding row i of the "
            f"tokenizer its weights were trained with (PaliGemma's has 257152); use that tokenizer.model, or "
            f"set config.model.vocab_size={pieces} to train from scratch")
    if action_head == "discrete":
        limit = vocab_size - DISCRETE_ACTION_BINS
        if pieces > limit:
            raise DataError(
                f"tokenizer {tokenizer.path} has {pieces} pieces but config.model.vocab_size={vocab_size} with "
                f"action_head='discrete' reserves the last {DISCRETE_ACTION_BINS} ids for action bins, leaving {limit}; "
                f"raise config.model.vocab_size to >= {pieces + DISCRETE_ACTION_BINS} or use a smaller tokenizer"
            )
    elif pieces > vocab_size:
        raise DataError(
            f"tokenizer {tokenizer.path} has {pieces} pieces but config.model.vocab_size={vocab_size}; "
            f"raise config.model.vocab_size to >= {pieces} or use a smaller tokenizer"
        )


def train_tokenizer(texts, out_path: str, vocab_size: int = 500, symbols=(), log=print) -> str:
    """Trains a SentencePiece unigram model on ``texts``; writes ``out_path`` atomically.

    ``symbols`` become single pieces (e.g. the ``<locRC>`` location tokens of vla_jax.sim.grounding_answers).
    ``hard_vocab_limit=False`` lets a small corpus produce fewer pieces than asked instead of failing.
    No dummy "▁" prefix, so an answer that is one symbol encodes to exactly that one piece.
    """
    import sentencepiece as spm

    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise DataError(f"tokenizer corpus for {out_path} is empty")
    out_path = os.path.abspath(out_path)
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    prefix = f"{out_path}.tmp{os.getpid()}"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=prefix,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        add_dummy_prefix=False,
        user_defined_symbols=list(symbols),
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        num_threads=2,
        minloglevel=2,
    )
    os.replace(prefix + ".model", out_path)
    if os.path.exists(prefix + ".vocab"):
        os.replace(prefix + ".vocab", os.path.splitext(out_path)[0] + ".vocab")
    tok = Tokenizer(out_path)
    log(f"[tokenizer] wrote {out_path}: {tok.vocab_size} pieces from {len(texts)} sentences")
    return out_path


def corpus_from_dir(data_dir: str) -> list[str]:
    """Text for a tokenizer: the corpus file written by generation (all instruction paraphrases,
    captions, QA) if present, plus the instructions / captions / QA found in TFDS datasets under ``data_dir``."""
    texts: list[str] = []
    corpus = os.path.join(data_dir, CORPUS_FILE)
    if os.path.isfile(corpus):
        with open(corpus) as f:
            texts.extend(line.rstrip("\n") for line in f)
    for info_file in sorted(glob.glob(os.path.join(data_dir, "*", "*", "dataset_info.json"))):
        version_dir = os.path.dirname(info_file)
        name = os.path.basename(os.path.dirname(version_dir))
        source = release.open_release(version_dir, name)
        for shard in (shard for shards in source.splits.values() for shard in shards):
            for record in release.iter_records(shard, source.file_format, name):
                fmap = records.parse_record(record)
                for key in fmap.keys():
                    leaf = key.rsplit("/", 1)[-1]
                    if leaf in ("language_instruction", "natural_language_instruction", "caption", "question", "answer"):
                        texts.extend(records.to_text(v) for v in records.feature_list(fmap, key, name))
    return list(dict.fromkeys(texts))  # unique, first-seen order
