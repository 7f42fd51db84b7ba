"""The BPE tokenizer: trained with rustbpe on the training split, applied through tiktoken.

One special token, BOS (`<|bos|>`), takes the last id, `vocab_size - 1`; every document piece in the
prepared data starts with it. `token_bytes()` gives the UTF-8 byte length of each id (0 for BOS), which
is what turns a summed cross-entropy into bits per byte.

What is saved is plain data (pattern, ranks, ids), never a pickled tiktoken object, so a cache made
with one tiktoken version loads with another. `tiktoken.get_encoding` is never called: it downloads.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable
from pathlib import Path

import numpy as np

# GPT-4's split pattern with \p{N}{1,2} instead of {1,3}, as in karpathy's autoresearch: with a small
# vocabulary, two-digit number chunks waste fewer ids.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
BOS = "<|bos|>"
ENCODE_THREADS = max(1, min(8, os.cpu_count() or 1))


class Tokenizer:
    """A tiktoken encoding plus the BOS id; what the data pipeline and the evaluator need."""

    def __init__(self, pattern: str, mergeable_ranks: dict[bytes, int], vocab_size: int, name: str = "bpe"):
        import tiktoken

        if len(mergeable_ranks) > vocab_size - 1:
            raise ValueError(f"{len(mergeable_ranks)} ranks do not fit a vocabulary of {vocab_size} with BOS")
        self.pattern = pattern
        self.mergeable_ranks = mergeable_ranks
        self.vocab_size = vocab_size
        self.bos_id = vocab_size - 1
        self.name = name
        self.enc = tiktoken.Encoding(
            name=name, pat_str=pattern, mergeable_ranks=mergeable_ranks, special_tokens={BOS: self.bos_id}
        )

    @property
    def n_vocab(self) -> int:
        return self.vocab_size

    # -- encode / decode ------------------------------------------------------------------------

    def encode(self, text: str, bos: bool = False) -> list[int]:
        ids = self.enc.encode_ordinary(text)
        return [self.bos_id, *ids] if bos else ids

    def encode_batch(self, texts: list[str], bos: bool = False) -> list[list[int]]:
        out = self.enc.encode_ordinary_batch(texts, num_threads=ENCODE_THREADS)
        if bos:
            for ids in out:
                ids.insert(0, self.bos_id)
        return out

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        return self.enc.decode(ids)

    def token_bytes(self) -> np.ndarray:
        """UTF-8 byte length of every id (int32, length vocab_size); 0 for BOS and any unused id."""
        out = np.zeros(self.vocab_size, dtype=np.int32)
        for token, rank in self.mergeable_ranks.items():
            out[rank] = len(token)
        out[self.bos_id] = 0
        return out

    # -- persistence ----------------------------------------------------------------------------

    def to_state(self) -> dict:
        return {
            "format": 1,
            "name": self.name,
            "pattern": self.pattern,
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "bos": BOS,
            "mergeable_ranks": dict(self.mergeable_ranks),
        }

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as f:
            pickle.dump(self.to_state(), f, protocol=4)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        with open(path, "rb") as f:
            state = pickle.load(f)
        return cls(
            state["pattern"], state["mergeable_ranks"], state["vocab_size"], name=state.get("name", "bpe")
        )


def train_tokenizer(texts: Iterable[str], vocab_size: int, pattern: str = SPLIT_PATTERN, name: str = "bpe"):
    """Train a byte-level BPE with rustbpe: 256 byte tokens + merges up to vocab_size - 1, then BOS."""
    import rustbpe

    if vocab_size < 258:
        raise ValueError(f"vocab_size must be at least 258 (256 bytes, one merge, BOS), got {vocab_size}")
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(iter(texts), vocab_size - 1, pattern=pattern)
    ranks = {bytes(k): int(v) for k, v in bpe.get_mergeable_ranks()}
    return Tokenizer(bpe.get_pattern(), ranks, vocab_size, name=name)
