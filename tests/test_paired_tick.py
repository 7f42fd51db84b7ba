"""Paired, sequential judging through the real steps: propose -> train -> judge with the local forge,
the ledger and resources.md, and a stand-in runner whose val_bpb is a known function of the
train.py and the seed (no harness, so nothing here depends on how busy the machine is).

    val_bpb = 1.8 + EFFECT (a constant the scripted proposer writes into train.py)
              + a_s (the seed's effect, the same for every train.py: large, 0.03)
              + w (candidate x seed: +-0.0025 alternating with the seed, its sign the effect's,
                   0 for the base: paired differences that two pairs cannot tell from noise and
                   four can; a function of EFFECT and the seed only, so that an edit to the
                   repository's train.py changes no number here)
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from support.tick_fixtures import ScriptedProposer, edit, init_research_repo, read_ledger

from autoresearch_ci import cli
from autoresearch_ci.config import load_config
from autoresearch_ci.forge.local import LocalForge
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.records import RunMetrics, RunOutcome, RunRequest, sha256_text
from autoresearch_ci.report.pr import render_pr_comment
from autoresearch_ci.steps.judge import judge
from autoresearch_ci.steps.propose import propose
from autoresearch_ci.steps.train import train

SEED_SPREAD = 0.03
INTERACTION = 0.0025


class FormulaRunner:
    """A runner that answers with the formula above, `parallel` runs at a time, and keeps every request."""

    name = "local"

    def __init__(self, parallel: int | None):
        self.parallel = parallel
        self.rounds: list[list[RunRequest]] = []

    def slots(self, preset: str) -> int | None:
        return self.parallel

    @staticmethod
    def value(train_py: str, seed: int) -> float:
        m = re.search(r"^EFFECT = ([-+.\d]+)", train_py, flags=re.M)
        effect = float(m.group(1)) if m else 0.0
        a = np.random.default_rng(1000 + seed).normal(0, SEED_SPREAD)
        w = INTERACTION * (-1) ** seed * np.sign(effect)
        return float(1.8 + effect + a + w)

    def run_many(self, requests: list[RunRequest]) -> list[RunOutcome]:
        self.rounds.append(list(requests))
        out = []
        for r in requests:
            m = RunMetrics(
                status="ok",
                val_bpb=self.value(r.train_py, r.seed),
                preset=r.preset,
                seed=r.seed,
                device="cpu",
                train_sha256=sha256_text(r.train_py),
            )
            out.append(RunOutcome(request=r, runner=self.name, metrics=m, wall_seconds=1.0))
        return out

    def seen(self, round_no: int) -> list[tuple[str, int]]:
        return [(r.role, r.seed) for r in self.rounds[round_no]]


def with_effect(x: float):
    return edit(
        f"Set EFFECT to {x}", lambda s: re.sub(r"^EFFECT = .*$", "", s, flags=re.M) + f"\nEFFECT = {x}\n"
    )


def tick(root, runner, *steps, lines=None):
    cfg = load_config(root)
    forge = LocalForge(root, base_branch=cfg.github.base_branch)
    ledger = Ledger(root / cfg.paths.ledger)
    state = propose(cfg, forge, ScriptedProposer(*steps), ledger, "local", candidates=len(steps))
    results = train(cfg, state, runner, ledger, progress=(lines.append if lines is not None else print))
    return state, results, judge(cfg, state, results, forge, ledger)


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "research"
    init_research_repo(r, preset="tiny")
    return r


def test_a_clear_loser_stops_after_one_pair(root):
    runner = FormulaRunner(parallel=1)
    state, results, written = tick(root, runner, with_effect(+0.05))
    assert state.baseline_seeds_needed == [0, 1]
    (rec,) = [r for r in written if r.kind == "experiment"]
    assert runner.seen(0) == [("baseline", 0), ("baseline", 1), ("candidate", 0)]
    assert len(runner.rounds) == 1
    v = rec.verdict
    assert v.decision == "discard" and v.pairs == 1 and v.seeds == [0] and "futility" in v.reason
    assert v.delta == pytest.approx(0.05, abs=0.01)


def test_a_promising_candidate_earns_pairs_is_kept_and_its_runs_become_the_base(root):
    runner = FormulaRunner(parallel=2)
    lines: list[str] = []
    state, results, written = tick(root, runner, with_effect(-0.02), lines=lines)
    # round 1: the base's seeds 0 and 1 with the candidate's; round 2: seeds 2 and 3 of both
    assert runner.seen(0) == [("baseline", 0), ("baseline", 1), ("candidate", 0), ("candidate", 1)]
    assert runner.seen(1) == [("baseline", 2), ("baseline", 3), ("candidate", 2), ("candidate", 3)]
    (rec,) = [r for r in written if r.kind == "experiment"]
    v = rec.verdict
    assert v.decision == "keep" and v.pairs == 4 and v.seeds == [0, 1, 2, 3]
    assert v.delta == pytest.approx(-0.02, abs=0.003)
    assert v.delta_low < v.delta < v.delta_high < 0 and v.noise_dof == 3  # its own 4 x 2 runs: 3 dof
    # the seed spread (0.03) is ten times the effect and cancels: sigma_d is about the interaction's
    assert v.noise < 5 * INTERACTION * np.sqrt(2)
    assert rec.baseline.seeds == [0, 1, 2, 3] and rec.baseline.train_sha256
    assert any(line.startswith("round 2:") for line in lines) and any("more pairs" in line for line in lines)
    assert rec.merged_commit

    comment = render_pr_comment(rec)
    assert "| seed" in comment and "mean (4 pairs)" in comment and "95% interval" in comment
    assert LocalForge(root).notes(rec.candidate_commit)[1].startswith(comment.strip()[:40])
    text = (root / "resources.md").read_text(encoding="utf-8")
    assert f"paired Δ {v.delta:+.6f} [{v.delta_low:+.6f}, {v.delta_high:+.6f}] (4 pairs)" in text
    from dashboard.build import COLUMNS, page_data

    (cells,) = page_data(read_ledger(root))["rows"]
    row = dict(zip(COLUMNS, cells, strict=True))
    assert (row["lo"], row["hi"], row["np"]) == (round(v.delta_low, 6), round(v.delta_high, 6), 4)

    # The next tick: main is the kept train.py, whose values on seeds 0-3 are the kept runs.
    runner2 = FormulaRunner(parallel=2)
    state2, _, written2 = tick(root, runner2, with_effect(+0.03))
    assert state2.baseline_seeds_needed == []
    assert [role for rnd in runner2.rounds for role, _ in [(r.role, r.seed) for r in rnd]] == [
        "candidate"
    ] * 2
    (rec2,) = [r for r in written2 if r.kind == "experiment"]
    assert rec2.verdict.decision == "discard" and rec2.verdict.pairs == 2
    assert rec2.baseline.record_ids == [rec.id]  # the kept experiment's runs
    assert rec2.baseline.values[:2] == [o.metrics.val_bpb for o in rec.runs[:2]]
    # ... and its noise estimate counts the earlier block too: 3 dof there, 1 of its own
    assert rec2.verdict.noise_dof == 4


def test_two_candidates_of_a_tick_share_the_base_runs_but_not_each_others_noise(root):
    runner = FormulaRunner(parallel=2)
    state, results, written = tick(root, runner, with_effect(+0.04), with_effect(+0.05))
    assert runner.seen(0).count(("baseline", 0)) == 1 and len(runner.rounds) == 1
    recs = [r for r in written if r.kind == "experiment"]
    assert [r.verdict.decision for r in recs] == ["discard", "discard"]
    assert [r.verdict.noise_dof for r in recs] == [1, 1]  # each: its own rows only


def test_status_shows_the_paired_delta_and_its_interval(root, capsys):
    tick(root, FormulaRunner(parallel=2), with_effect(-0.02), lines=[])
    assert cli.main(["status", "--repo", str(root)]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("experiment"))
    assert "95% interval" in head and "pairs" in head
    (rec,) = [r for r in read_ledger(root) if r.kind == "experiment"]
    v = rec.verdict
    row = next(line for line in out.splitlines() if line.startswith(rec.id))
    assert f"[{v.delta_low:+.4f}, {v.delta_high:+.4f}]" in row and " 4 " in row


# ----------------------------------------------------------------------------------------------
# records written before paired judging


OLD_LINE = {
    "schema_version": 1,
    "id": "20261122-154949-408823",
    "kind": "experiment",
    "tick": "20261122-154700-aaaaaa",
    "created_at": "2026-11-22T15:49:49Z",
    "hypothesis": "Lowering SCALAR_LR from 0.5 to 0.35 should make optimization more stable",
    "parent_commit": "a" * 40,
    "candidate_commit": "c" * 40,
    "preset": "cpu",
    "runner": "local",
    "device": "cpu",
    "seeds": [0, 1000],
    "runs": [
        {
            "request": {
                "experiment_id": "20261122-154949-408823",
                "role": role,
                "commit": "c" * 40,
                "train_py": "",
                "preset": "cpu",
                "seed": seed,
            },
            "runner": "local",
            "metrics": {"status": "ok", "val_bpb": val, "device": "cpu", "train_sha256": "c" * 64},
        }
        for role, seed, val in (("candidate", 0, 1.7068), ("confirmation", 1000, 1.7090))
    ],
    "baseline": {
        "commit": "a" * 40,
        "preset": "cpu",
        "runner": "local",
        "device": "cpu",
        "values": [1.7255, 1.7379, 1.7326],
        "seeds": [0, 1, 2],
        "mean": 1.732,
        "std": 0.0062,
        "record_ids": ["20261122-154700-aaaaaa"],
    },
    "verdict": {
        "decision": "discard",
        "reason": "val_bpb 1.707900 (2 runs) vs baseline 1.732000 (3 runs): better by 0.024100",
        "candidate_mean": 1.7079,
        "baseline_mean": 1.732,
        "delta": -0.0241,
        "threshold": 0.0323,
        "noise": 0.021,
        "confirmed": True,
    },
}


def test_an_old_unpaired_record_still_loads_renders_and_stays_out_of_the_paired_noise(tmp_path):
    import json

    from autoresearch_ci.baselines import paired_noise as noise_for
    from autoresearch_ci.records import BaselineStats
    from autoresearch_ci.report import resources, tables
    from dashboard.build import COLUMNS, page_data

    path = tmp_path / "experiments.jsonl"
    path.write_text(json.dumps(OLD_LINE) + "\n", encoding="utf-8")
    (rec,) = Ledger(path).records()
    v = rec.verdict
    assert not v.paired and v.pairs is None and v.delta_low is None and v.confirmed
    assert rec.baseline.train_sha256 is None

    comment = render_pr_comment(rec)
    assert "noise σ (pooled baselines)" in comment and "a keep needed < −0.032300" in comment
    entry = resources.render_entry(rec)
    assert "Δ -0.024100 (a keep needed < −0.032300, noise σ 0.021000)" in entry
    assert "(confirmed by a second run)" in entry
    assert "delta -0.0241 ±0.0323" in tables.loop_line(rec)
    row = next(line for line in tables.status_table([rec], None).splitlines() if line.startswith(rec.id))
    assert "-0.0241" in row and "0.0323" in row
    md = tables.render_results_table([rec])
    assert "| `20261122-154949-408823` | discard" in md and "| Δ -0.024100 " in md
    assert tables.results_tsv([rec]).splitlines()[1].endswith("\t-0.024100\t0.032300\t\t\t\t")
    data = page_data([rec])
    (cells,) = data["rows"]
    got = dict(zip(COLUMNS, cells, strict=True))
    assert got["d"] == -0.0241 and got["cf"] == 1 and got["lo"] is None and got["np"] is None

    base = BaselineStats(
        commit="a" * 40,
        preset="cpu",
        runner="local",
        device="cpu",
        values=[1.7],
        seeds=[0],
        mean=1.7,
        std=0.0,
    )
    assert noise_for([rec], base, []).dof == 0  # an unpaired record adds nothing to sigma_d
