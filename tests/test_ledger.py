"""Ledger: crash-safe appends, loud corruption reports, repair that loses nothing, and the helpers."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from autoresearch_ci.ledger import Ledger, LedgerCorruptError
from autoresearch_ci.records import (
    SCHEMA_VERSION,
    ExperimentRecord,
    RunMetrics,
    RunOutcome,
    RunRequest,
    Verdict,
)
from autoresearch_ci.report.tables import TSV_COLUMNS

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def run(exp_id, role, val, status="ok", seed=0, device="cpu", mem=2048.0) -> RunOutcome:
    return RunOutcome(
        request=RunRequest(
            experiment_id=exp_id, role=role, commit="c" * 40, train_py="", preset="cpu", seed=seed
        ),
        runner="local",
        metrics=RunMetrics(
            status=status, val_bpb=val, peak_memory_mb=mem, device=device, train_sha256=exp_id
        ),
    )


def baseline(i, commit, values, at=T0, runner="local") -> ExperimentRecord:
    rid = f"b{i}"
    runs = [run(rid, "baseline", v, seed=s) for s, v in enumerate(values)]
    for o in runs:  # a baseline measures its commit's train.py: same commit, same bytes
        o.metrics.train_sha256 = f"sha-of-{commit}"
    return ExperimentRecord(
        id=rid,
        kind="baseline",
        parent_commit=commit,
        candidate_commit=commit,
        preset="cpu",
        runner=runner,
        device="cpu",
        runs=runs,
        created_at=at,
    )


def experiment(i, decision="discard", mean=1.5, delta=0.01, hyp="try a thing", commit="base", at=T0, **kw):
    rid = f"e{i}"
    runs = (
        []
        if decision in ("proposal-failed",)
        else [
            run(
                rid,
                "candidate",
                mean if decision != "crash" else None,
                status="ok" if decision != "crash" else "crash",
            )
        ]
    )
    v = Verdict(
        decision=decision,
        reason="because",
        candidate_mean=mean if decision in ("keep", "discard") else None,
        baseline_mean=mean - delta,
        delta=delta if decision in ("keep", "discard") else None,
        threshold=0.002,
    )
    return ExperimentRecord(
        id=rid,
        parent_commit=commit,
        candidate_commit=f"{i:040d}",
        preset="cpu",
        runner="local",
        device="cpu",
        hypothesis=hyp,
        runs=runs,
        verdict=v,
        created_at=at,
        **kw,
    )


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(tmp_path / "ledger" / "experiments.jsonl")


def test_append_and_read_roundtrip(ledger):
    recs = [experiment(i) for i in range(3)] + [baseline(0, "base", [1.0, 1.1])]
    ledger.extend(recs)
    raw = ledger.path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 4
    got, problems = ledger.read()
    assert problems == [] and [r.id for r in got] == ["e0", "e1", "e2", "b0"]
    assert got[0] == recs[0]


def test_append_fsyncs_file_and_new_directory(ledger, monkeypatch):
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    ledger.append(experiment(0))
    assert len(calls) == 2  # the file, then the directory that gained an entry
    ledger.append(experiment(1))
    assert len(calls) == 3


def test_corrupt_middle_line_is_reported_not_skipped(ledger):
    ledger.extend([experiment(0), experiment(1)])
    with ledger.path.open("ab") as f:
        f.write(b'{"id": "broken", "this is not json\n')
    ledger.append(experiment(2))
    with pytest.raises(LedgerCorruptError) as e:
        ledger.records()
    msg = str(e.value)
    assert f"{ledger.path}:3: bad JSON" in msg and "ledger repair" in msg and "Nothing was changed" in msg
    got, problems = ledger.read(strict=False)
    assert [r.id for r in got] == ["e0", "e1", "e2"]
    assert [(p.line, p.parsed_ok) for p in problems] == [(3, False)]


def test_schema_error_is_reported(ledger):
    ledger.append(experiment(0))
    bad = experiment(1).model_dump(mode="json")
    del bad["preset"]
    with ledger.path.open("a") as f:
        f.write(json.dumps(bad) + "\n")
    _, problems = ledger.read(strict=False)
    assert len(problems) == 1 and "schema error at preset" in problems[0].error


def test_torn_last_line_then_append_keeps_new_record_whole(ledger):
    ledger.append(experiment(0))
    line = experiment(1).model_dump_json()
    with ledger.path.open("a") as f:
        f.write(line[: len(line) // 2])  # an append that died half-way
    _, problems = ledger.read(strict=False)
    assert len(problems) == 1 and "torn last line" in problems[0].error
    ledger.append(experiment(2))  # must not fuse with the debris
    got, problems = ledger.read(strict=False)
    assert [r.id for r in got] == ["e0", "e2"]
    assert len(problems) == 1 and problems[0].line == 2 and "bad JSON" in problems[0].error


def test_valid_last_line_without_newline_is_kept_and_reported(ledger):
    ledger.append(experiment(0))
    with ledger.path.open("a") as f:
        f.write(experiment(1).model_dump_json())
    got, problems = ledger.read(strict=False)
    assert [r.id for r in got] == ["e0", "e1"]
    assert problems[0].parsed_ok and "no newline" in problems[0].error
    ledger.repair()
    assert ledger.path.read_bytes().endswith(b"\n")
    assert not ledger.path.with_name(ledger.path.name + ".corrupt").exists()
    assert [r.id for r in ledger.records()] == ["e0", "e1"]


def test_repair_moves_bad_lines_and_keeps_good_ones(ledger):
    ledger.append(experiment(0))
    with ledger.path.open("ab") as f:
        f.write(b"garbage one\n")
    ledger.append(experiment(1))
    with ledger.path.open("ab") as f:
        f.write(b'{"id": "torn')
    problems = ledger.repair()
    assert len(problems) == 2
    assert [r.id for r in ledger.records()] == ["e0", "e1"]  # strict read now passes
    moved = [
        json.loads(x) for x in ledger.path.with_name("experiments.jsonl.corrupt").read_text().splitlines()
    ]
    assert [m["text"] for m in moved] == ["garbage one", '{"id": "torn']
    assert all(m["moved_at"] and m["problem"] and m["line"] for m in moved)
    assert ledger.repair() == []  # nothing left to do


def test_recover_handles_only_a_torn_tail(ledger):
    ledger.append(experiment(0))
    with ledger.path.open("ab") as f:
        f.write(b'{"id": "half')
    assert len(ledger.recover()) == 1 and [r.id for r in ledger.records()] == ["e0"]
    with ledger.path.open("ab") as f:
        f.write(b"garbage in the middle\n")
    ledger.append(experiment(1))
    assert ledger.recover() == []  # that needs a person
    with pytest.raises(LedgerCorruptError):
        ledger.records()


def test_repair_never_loses_a_concurrent_append(ledger):
    ledger.append(experiment(0))
    done = threading.Event()

    def writer():
        for i in range(1, 41):
            ledger_w.append(experiment(i))
        done.set()

    ledger_w = Ledger(ledger.path)  # its own fds, as another process would have
    t = threading.Thread(target=writer)
    t.start()
    repairs = 0
    while not done.is_set():
        with ledger.path.open("ab") as f:
            f.write(b"garbage\n")
        repairs += bool(ledger.repair())
        # Let the writer take the lock between repairs (a flock is not fair: without a pause this
        # loop re-takes it at once, and the writer's 40 appends wait minutes on a busy machine).
        time.sleep(0.002)
    t.join()
    ledger.repair()
    assert repairs > 0
    assert [r.id for r in ledger.records()] == [f"e{i}" for i in range(41)]


def test_schema_versions(ledger):
    old = experiment(0).model_dump(mode="json")
    old["schema_version"] = 0
    for k in ("patch", "llm", "seeds", "archived_ref"):  # an older writer did not know these yet
        old.pop(k)
    new = experiment(1).model_dump(mode="json")
    new["schema_version"] = SCHEMA_VERSION + 1
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n")
    got, problems = ledger.read(strict=False)
    assert [r.id for r in got] == ["e0"] and got[0].schema_version == 0
    assert "newer than this autoresearch-ci reads" in problems[0].error


def test_same_id_twice_is_an_update(ledger):
    ledger.append(experiment(0, decision="discard"))
    ledger.append(experiment(1))
    ledger.append(experiment(0, decision="keep", delta=-0.01))
    got = ledger.records()
    assert [r.id for r in got] == ["e0", "e1"] and got[0].verdict.decision == "keep"


def test_missing_ledger_is_empty(ledger):
    assert ledger.records() == [] and ledger.best() is None and ledger.repair() == []


def test_helpers(ledger):
    ledger.extend(
        [
            baseline(0, "base", [1.50, 1.52]),
            experiment(1, "discard", 1.53, 0.02),
            experiment(2, "keep", 1.45, -0.06, commit="base"),
            baseline(1, "next", [1.44, 1.46]),
            baseline(2, "base", [1.51]),
            baseline(3, "base", [1.50, 1.49], runner="modal"),
            experiment(3, "keep", 1.40, -0.05, commit="next"),
            experiment(4, "crash"),
        ]
    )
    assert [r.id for r in ledger.experiments()] == ["e1", "e2", "e3", "e4"]
    assert [r.id for r in ledger.recent(2)] == ["e3", "e4"] and ledger.recent(0) == []
    assert [r.id for r in ledger.baselines_for("base", "cpu", "local")] == ["b0", "b2"]
    assert ledger.baselines_for("base", "cpu", "local", device="cuda") == []
    assert ledger.baselines_for("other", "cpu", "local") == []
    sha = ledger.records()[0].runs[0].metrics.train_sha256  # b0's train.py
    assert [r.id for r in ledger.baselines_for("other", "cpu", "local", train_sha256=sha)] == ["b0", "b2"]
    groups = ledger.baseline_groups("cpu", "local")  # grouped by the train.py measured, newest last
    assert list(groups) == ["sha-of-next", "sha-of-base"]
    assert groups["sha-of-base"] == [1.50, 1.52, 1.51] and groups["sha-of-next"] == [1.44, 1.46]
    assert list(ledger.baseline_groups("cpu", "local", limit=1)) == ["sha-of-base"]
    val, rec = ledger.best()
    assert val == 1.40 and rec.id == "e3"


def test_export_tsv(ledger, tmp_path):
    ledger.extend(
        [
            experiment(1, "keep", 1.45, -0.06, hyp="raise\tthe LR\nto 0.04", pr_url="https://x/pull/1"),
            experiment(2, "crash"),
            experiment(3, "invalid"),
            baseline(0, "base", [1.5, 1.5]),
        ]
    )
    out = tmp_path / "results.tsv"
    text = ledger.export_tsv(out)
    assert out.read_text() == text
    rows = [line.split("\t") for line in text.splitlines()]
    assert rows[0] == TSV_COLUMNS and rows[0][:5] == [
        "commit",
        "val_bpb",
        "memory_gb",
        "status",
        "description",
    ]
    assert all(len(r) == len(TSV_COLUMNS) for r in rows) and len(rows) == 4  # baselines are not rows
    keep = dict(zip(TSV_COLUMNS, rows[1], strict=True))
    assert keep["commit"] == "0000000" and keep["val_bpb"] == "1.450000" and keep["memory_gb"] == "2.0"
    assert keep["status"] == "keep" and keep["description"] == "raise the LR to 0.04"
    assert keep["delta"] == "-0.060000" and keep["pr_url"] == "https://x/pull/1"
    crash = dict(zip(TSV_COLUMNS, rows[2], strict=True))
    assert (crash["status"], crash["val_bpb"], crash["memory_gb"]) == ("crash", "0.000000", "0.0")
    invalid = dict(zip(TSV_COLUMNS, rows[3], strict=True))
    assert (invalid["status"], invalid["decision"]) == ("discard", "invalid")


# ----------------------------------------------------------------------------------------------
# a writer killed at random moments loses nothing it finished writing

WRITER = textwrap.dedent("""
    import sys
    from autoresearch_ci.ledger import Ledger
    from autoresearch_ci.records import ExperimentRecord
    ledger = Ledger(sys.argv[1])
    prefix = sys.argv[2]
    pad = "x" * 100_000  # big lines, so a kill may land inside the kernel's copy of one write
    print("ready", flush=True)
    i = 0
    while True:
        rid = f"{prefix}-{i}"
        ledger.append(ExperimentRecord(id=rid, parent_commit="p", preset="cpu", runner="local", patch=pad))
        print(rid, flush=True)
        i += 1
""")


def test_sigkill_mid_append_loses_no_finished_record(ledger):
    rng = random.Random(1234)
    ledger.path.parent.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    confirmed: list[str] = []
    kills = 6
    for k in range(kills):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ledger.path), f"w{k}"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        confirmed += [x for x in out.split() if x]  # append() returned for each of these
        if k == 2:  # Linux rarely tears a single write() even under SIGKILL: simulate a writer that did
            with ledger.path.open("ab") as f:
                f.write(b'{"schema_version": 1, "id": "torn-by-hand", "patch": "xxx')
    assert len(confirmed) > kills  # the writers really did write

    records, problems = ledger.read(strict=False)
    ids = [r.id for r in records]
    assert set(confirmed) <= set(ids), "a record whose append returned was lost"
    assert len(ids) == len(set(ids))
    assert len(ids) <= len(confirmed) + kills  # at most the one in flight per kill
    assert len(problems) <= kills + 1
    assert any("torn-by-hand" in p.text for p in problems)  # the damage is reported, not skipped
    for p in problems:
        assert not p.parsed_ok and ("bad JSON" in p.error or "torn" in p.error)

    moved = ledger.repair()
    assert len(moved) == len(problems)
    assert [r.id for r in ledger.records()] == ids  # strict read passes; every good record is still there
    corrupt = ledger.path.with_name(ledger.path.name + ".corrupt").read_text().splitlines()
    assert len(corrupt) == len(problems)


def test_created_at_is_kept_in_utc(ledger):
    at = T0 + timedelta(hours=3)
    ledger.append(experiment(0, at=at))
    assert ledger.records()[0].created_at == at
