"""Train a SentencePiece tokenizer from the text of generated datasets.

    python tools/train_tokenizer.py --corpus_from=data/default --out=data/default/tokenizer.model --vocab_size=500
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from vla_jax.data import tokenizer  # noqa: E402
from vla_jax.sim.grounding_answers import LOCATION_TOKENS  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus_from", required=True, help="data dir (tokenizer_corpus.txt and TFDS datasets in it)")
    p.add_argument("--out", required=True)
    p.add_argument("--vocab_size", type=int, default=500)
    a = p.parse_args()
    tokenizer.train_tokenizer(tokenizer.corpus_from_dir(a.corpus_from), a.out, vocab_size=a.vocab_size,
                              symbols=LOCATION_TOKENS)


if __name__ == "__main__":
    main()
