"""The BPE tokenizer: round trips, BOS is the last id, token_bytes adds up to the UTF-8 bytes."""

from __future__ import annotations

import numpy as np
import pytest

from harness.tokenizer import Tokenizer, train_tokenizer

TEXTS = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "Fellow-Citizens of the Senate and House of Representatives:\n\nI embrace with great satisfaction.\n",
    "Numbers 12345 and 2026, unicode: naïve café — 你好 🙂\n\n\n  indented line\n",
] * 5


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer(TEXTS, 400)


def test_round_trip_and_bos(tok):
    assert tok.bos_id == 399 and tok.vocab_size == 400
    for text in TEXTS + ["unseen: Zebra-𝔘nicode ∑ 0x1F\r\n"]:
        ids = tok.encode(text)
        assert tok.bos_id not in ids
        assert tok.decode(ids) == text
    assert tok.encode("hi", bos=True)[0] == tok.bos_id
    assert tok.encode_batch(["a b", "c"], bos=True) == [
        tok.encode("a b", bos=True),
        tok.encode("c", bos=True),
    ]


def test_token_bytes_sum_to_utf8_bytes(tok):
    tb = tok.token_bytes()
    assert tb.shape == (400,) and tb.dtype == np.int32 and tb[tok.bos_id] == 0
    for text in TEXTS:
        ids = tok.encode(text, bos=True)
        assert int(tb[ids].sum()) == len(tok.decode(ids[1:]).encode("utf-8")) == len(text.encode("utf-8"))


def test_save_load_identical(tok, tmp_path):
    tok.save(tmp_path / "t.pkl")
    again = Tokenizer.load(tmp_path / "t.pkl")
    assert again.pattern == tok.pattern and again.mergeable_ranks == tok.mergeable_ranks
    assert again.encode(TEXTS[2]) == tok.encode(TEXTS[2])


def test_training_is_deterministic(tok):
    assert train_tokenizer(TEXTS, 400).mergeable_ranks == tok.mergeable_ranks


def test_prepared_tokenizer_round_trips_validation_text(prepared_tiny):
    tok = prepared_tiny.tokenizer()
    val = np.asarray(prepared_tiny.val_tokens()[:20000])
    assert tok.vocab_size == 4096 and tok.bos_id == 4095 == prepared_tiny.bos_id
    pieces = np.split(val, np.flatnonzero(val == tok.bos_id)[1:])
    tb = prepared_tiny.token_bytes()
    for p in pieces[:-1]:
        assert p[0] == tok.bos_id
        text = tok.decode(p[1:])
        assert int(tb[p].sum()) == len(text.encode("utf-8"))
