"""baselines.py: the base's value on each seed (reuse, staleness, a kept candidate's runs) and the
noise of a pair pooled from the ledger's blocks. Synthetic records only: nothing runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autoresearch_ci import baselines
from autoresearch_ci.config import JudgeConfig
from autoresearch_ci.noise import paired_noise
from autoresearch_ci.records import (
    BaselineStats,
    ExperimentRecord,
    RunMetrics,
    RunOutcome,
    RunRequest,
    Verdict,
    sha256_text,
)

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
BASE_PY = "base train.py\n"
FILES = {"train.py": BASE_PY}
SHA = sha256_text(BASE_PY)


def run(val, seed, *, role="baseline", py=BASE_PY, at=T0, device="cpu", eid="x", status="ok") -> RunOutcome:
    req = RunRequest(experiment_id=eid, role=role, commit="c", train_py=py, preset="cpu", seed=seed)
    m = RunMetrics(status=status, val_bpb=val, device=device, train_sha256=sha256_text(py))
    return RunOutcome(request=req, runner="local", metrics=m, started_at=at, finished_at=at)


def baseline_record(rid, runs, at=T0) -> ExperimentRecord:
    return ExperimentRecord(
        id=rid, kind="baseline", parent_commit="m", preset="cpu", runner="local", runs=runs, created_at=at
    )


def experiment(rid, base_vals, cand_vals, *, tick="t", decision="discard", at=T0, py="cand\n", base_sha=SHA):
    seeds = sorted(cand_vals)
    d = [cand_vals[s] - base_vals[s] for s in seeds]
    b = BaselineStats(
        commit="m",
        preset="cpu",
        runner="local",
        device="cpu",
        values=[base_vals[s] for s in sorted(base_vals)],
        seeds=sorted(base_vals),
        mean=sum(base_vals.values()) / len(base_vals),
        std=0.0,
        train_sha256=base_sha,
    )
    v = Verdict(
        decision=decision,
        reason="r",
        delta=sum(d) / len(d),
        pairs=len(d),
        seeds=seeds,
        paired_deltas=d,
    )
    runs = [run(cand_vals[s], s, role="candidate", py=py, at=at, eid=rid) for s in seeds]
    return ExperimentRecord(
        id=rid,
        tick=tick,
        parent_commit="m",
        preset="cpu",
        runner="local",
        runs=runs,
        baseline=b,
        verdict=v,
        created_at=at,
    )


# ----------------------------------------------------------------------------------------------
# values by seed


def test_each_seed_takes_its_newest_fresh_run_of_the_same_code():
    recs = [
        baseline_record("b1", [run(1.80, 0, at=T0), run(1.81, 1, at=T0)]),
        baseline_record("b2", [run(1.82, 0, at=T0 + timedelta(hours=1))]),  # seed 0 re-measured
        baseline_record("other", [run(1.50, 2, py="another train.py\n", at=T0)]),
    ]
    got = baselines.seed_values(recs, FILES, "cpu", "local", since=None)
    assert {s: (rid, o.metrics.val_bpb) for s, (rid, o) in got.items()} == {0: ("b2", 1.82), 1: ("b1", 1.81)}
    later = baselines.seed_values(recs, FILES, "cpu", "local", since=T0 + timedelta(minutes=30))
    assert list(later) == [0]  # seed 1's run is stale
    assert baselines.seed_values(recs, FILES, "cpu", "modal", since=None) == {}


def test_a_kept_candidates_runs_are_its_codes_baseline():
    kept = experiment("k", {0: 1.80, 1: 1.81}, {0: 1.70, 1: 1.71}, decision="keep", py=BASE_PY)
    dropped = experiment("d", {0: 1.80, 1: 1.81}, {0: 1.60, 1: 1.61}, decision="discard", py=BASE_PY)
    got = baselines.seed_values([dropped, kept], FILES, "cpu", "local", since=None)
    assert {s: (rid, o.metrics.val_bpb) for s, (rid, o) in got.items()} == {0: ("k", 1.70), 1: ("k", 1.71)}


def test_cutoff_by_age_and_by_experiments_served():
    jc = JudgeConfig(baseline_max_age_hours=24, baseline_max_experiments=2)
    now = T0 + timedelta(hours=2)
    assert baselines.cutoff([], "m", FILES, "cpu", "local", jc, now=now) == now - timedelta(hours=24)
    served = [experiment(f"e{i}", {0: 1.8}, {0: 1.7}, at=T0 + timedelta(minutes=i)) for i in range(3)]
    assert baselines.cutoff(served, "m", FILES, "cpu", "local", jc, now=now) == T0 + timedelta(minutes=1)
    other = [experiment("o", {0: 1.8}, {0: 1.7}, base_sha="0" * 64, at=now)]
    assert baselines.cutoff(other, "m", FILES, "cpu", "local", jc, now=now) == now - timedelta(hours=24)


def test_plan_and_current():
    jc = JudgeConfig()
    recs = [baseline_record("b1", [run(1.80, 0, at=T0)])]
    seeds, since = baselines.plan(recs, "m", FILES, "cpu", "local", jc, now=T0 + timedelta(hours=1))
    assert seeds == [1] and since == T0 - timedelta(hours=23)
    b = baselines.current(
        recs, "m", FILES, "cpu", "local", tick_id="t9", since=since, new_runs=[run(1.83, 1, eid="t9")]
    )
    assert b.seeds == [0, 1] and b.values == [1.80, 1.83] and b.record_ids == ["b1", "t9"]
    assert b.train_sha256 == SHA and b.by_seed() == {0: 1.80, 1: 1.83}
    assert baselines.current([], "m", FILES, "cpu", "local", tick_id="t", since=None, new_runs=[]) is None


# ----------------------------------------------------------------------------------------------
# the noise of a pair from the ledger


def test_paired_noise_pools_blocks_and_leaves_out_this_tick_and_far_rows():
    base = {0: 1.80, 1: 1.81, 2: 1.79}
    a = experiment("a", base, {0: 1.79, 1: 1.83})
    b = experiment("b", base, {0: 1.78, 1: 1.80, 2: 1.77})
    sibling = experiment("s", base, {0: 1.70, 1: 1.75}, tick="now")
    far = experiment("f", base, {0: 2.30, 1: 2.60})  # a diverging change: 20% worse
    cur = BaselineStats(
        commit="m",
        preset="cpu",
        runner="local",
        device="cpu",
        values=list(base.values()),
        seeds=list(base),
        mean=1.8,
        std=0.0,
        train_sha256=SHA,
    )
    mine = [run(1.76, 0, role="candidate", py="mine\n"), run(1.80, 1, role="candidate", py="mine\n")]
    got = baselines.paired_noise([a, b, sibling, far], cur, mine, tick_id="now")
    rows = [base, {0: 1.79, 1: 1.83}, {0: 1.78, 1: 1.80, 2: 1.77}, {0: 1.76, 1: 1.80}]
    expect = paired_noise([rows])
    assert (got.dof, got.groups) == (expect.dof, 1) and got.sigma == pytest.approx(expect.sigma)
    assert got.dof == 1 + 2 + 1  # (a: 1) + (b: 2 with the base's seed 2) + (mine: 1)


def test_a_remeasured_base_starts_a_new_block():
    old = experiment("a", {0: 1.80, 1: 1.81}, {0: 1.79, 1: 1.83})
    new = experiment("b", {0: 1.85, 1: 1.81}, {0: 1.84, 1: 1.80})  # seed 0 of the base measured again
    cur = BaselineStats(
        commit="m",
        preset="cpu",
        runner="local",
        values=[1.85, 1.81],
        seeds=[0, 1],
        mean=1.83,
        std=0.0,
        train_sha256=SHA,
    )
    got = baselines.paired_noise([old, new], cur, [])
    expect = paired_noise(
        [[{0: 1.80, 1: 1.81}, {0: 1.79, 1: 1.83}], [{0: 1.85, 1: 1.81}, {0: 1.84, 1: 1.80}]]
    )
    assert (got.dof, got.groups) == (expect.dof, 2) and got.sigma == pytest.approx(expect.sigma)


def test_only_the_newest_blocks_count():
    recs = [
        experiment(f"e{i}", {0: 1.80, 1: 1.81}, {0: 1.79 + i / 1000, 1: 1.83}, base_sha=f"{i:064d}")
        for i in range(30)
    ]
    cur = BaselineStats(
        commit="m",
        preset="cpu",
        runner="local",
        values=[1.8, 1.8],
        seeds=[0, 1],
        mean=1.8,
        std=0,
        train_sha256=SHA,
    )
    got = baselines.paired_noise(recs, cur, [], limit=5)
    assert got.groups == 4 and got.dof == 4  # four earlier blocks; the current one has no row yet
    newest = paired_noise([[r.baseline.by_seed(), baselines._candidate_row(r)] for r in recs[-4:]])
    assert got.sigma == pytest.approx(newest.sigma)
