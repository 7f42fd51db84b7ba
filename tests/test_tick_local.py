"""Whole ticks on one machine: `autoresearch-ci init` + `loop`, and every way a candidate can end.

The research repository is made by `autoresearch-ci init --preset tiny` and driven by the real
local forge (git branches, archive refs, notes), the real local runner (the locked harness in a
subprocess) and the real judge, ledger and resources.md. Only the proposer or the runner is replaced
by a stand-in where a test needs a particular outcome (a crash, a failed proposal, a guard rejection,
an infrastructure failure, a clear win whose merge fails once).

The expensive part, two iterations of the loop, runs once per module; every other test works on a
copy of the repository it leaves, so the baseline it measured is reused and most ticks train nothing
or one run.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import tick_steps as tick
from support.tick_fixtures import (
    InfraFailingRunner,
    ScriptedProposer,
    commit_all,
    edit,
    failure,
    init_research_repo,
    read_ledger,
    refs,
)

from autoresearch_ci import cli
from autoresearch_ci.config import load_config
from autoresearch_ci.forge.base import ForgeError
from autoresearch_ci.forge.git import Git
from autoresearch_ci.forge.local import ARCHIVE_PREFIX, LocalForge
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.records import (
    ExperimentRecord,
    RunMetrics,
    RunOutcome,
    RunRequest,
    Verdict,
    sha256_text,
)
from autoresearch_ci.runners.local import LocalRunner

LEDGER = Path("ledger/experiments.jsonl")
# A functional change that is harmless whatever the loop did to train.py's constants.
EXTRA = "\nUNUSED_KNOB = 1  # read by nothing\n"
# These ticks need no sharper noise estimate (see JudgeConfig.noise_dof_target): a baseline of the
# unchanged train.py is already in the ledger, so they train only what the test is about.
NO_EXTRA_BASELINE = {"judge": {"noise_dof_target": 0}}
CRASH = "\n\ndef train(ctx):\n    raise RuntimeError('deliberate failure: this candidate always crashes')\n"

pytestmark = pytest.mark.xdist_group("tick_local")  # one worker: the module fixture is made once


@dataclass
class Looped:
    root: Path
    output: str  # what `loop` printed


@pytest.fixture(scope="module")
def looped(tmp_path_factory, prepared_tiny) -> Looped:
    """A research repository after `autoresearch-ci loop --iterations 2` (offline proposer)."""
    root = tmp_path_factory.mktemp("looped") / "research"
    g = init_research_repo(root)
    # One round of pairs per candidate: the record a loop leaves does not depend on how many rounds
    # the judge looked (sequential judging has tests of its own: test_judge.py, test_paired_tick.py),
    # and a second round of real training is 4 more harness runs in this, the suite's costliest fixture.
    with open(root / "autoresearch.toml", "a", encoding="utf-8") as f:
        f.write("\n[judge]\nmax_pairs = 2\n")
    commit_all(g, "tests: one round of pairs")
    with cli.console.capture() as cap:
        rc = cli.main(["loop", "--repo", str(root), "--iterations", "2"])
    assert rc == 0, cap.get()
    return Looped(root, cap.get())


@pytest.fixture
def repo(looped, tmp_path) -> Path:
    """A private copy of the looped repository (its .git included), for a test to change."""
    dest = tmp_path / "research"
    shutil.copytree(looped.root, dest, symlinks=True)
    return dest


def one_tick(root: Path, proposer, runner=None, candidates: int | None = None):
    """propose -> train -> judge in process, with the local forge, as `loop` runs them."""
    cfg = load_config(root, NO_EXTRA_BASELINE)
    forge = LocalForge(root, base_branch=cfg.github.base_branch)
    ledger = Ledger(root / cfg.paths.ledger)
    runner = runner or LocalRunner(root)
    state = tick.propose(cfg, forge, proposer, ledger, "local", candidates=candidates, forge_repo=root)
    results = tick.train(cfg, state, runner, ledger)
    written = tick.judge(cfg, state, results, forge, ledger, root)
    return state, results, written


def experiments(records: list[ExperimentRecord]) -> list[ExperimentRecord]:
    return [r for r in records if r.kind == "experiment"]


def assert_committed_and_clean(root: Path) -> None:
    """Every bookkeeping file is committed on main and nothing is left over in the work tree."""
    g = Git(root)
    assert g.current_branch() == "refs/heads/main"
    assert g.show_file("main", str(LEDGER)) == (root / LEDGER).read_text(encoding="utf-8")
    assert g.show_file("main", "resources.md") == (root / "resources.md").read_text(encoding="utf-8")
    assert g.message("main").startswith("autoresearch: ledger for tick")
    assert g.run("status", "--porcelain") == ""


# ----------------------------------------------------------------------------------------------
# the loop


@pytest.mark.slow
def test_two_iterations_of_the_loop_leave_a_complete_record(looped, capsys):
    root = looped.root
    g = Git(root)
    records = read_ledger(root)
    exps = experiments(records)
    baselines = [r for r in records if r.kind == "baseline"]

    assert len(exps) == 2
    assert exps[0].tick != exps[1].tick
    assert records[0].kind == "baseline" and records[0].id == exps[0].tick  # measured before judging
    assert len(records[0].ok_values()) >= 2  # a first baseline needs at least two seeds for a spread
    for b in baselines:
        assert b.id in (exps[0].tick, exps[1].tick)  # at most one baseline record per tick
        assert {o.request.role for o in b.runs} == {"baseline"}
    # Baseline runs of the same train.py never repeat a seed, and a discard leaves train.py as it
    # was, so the second tick's judge still counts the first tick's baseline.
    seeds = [o.request.seed for b in baselines for o in b.runs]
    if exps[0].verdict.decision != "keep":
        assert len(seeds) == len(set(seeds))
        assert records[0].id in exps[1].baseline.record_ids

    for r in exps:
        assert r.proposer == "offline" and r.edit and r.edit["name"] in r.hypothesis
        assert r.patch.startswith("diff --git a/train.py b/train.py")
        assert r.patch_sha256 == sha256_text(r.patch)
        assert r.runs and all(o.metrics is not None for o in r.runs)
        assert {o.request.role for o in r.runs} <= {"candidate", "confirmation"}
        assert r.gpu_seconds > 0 and r.preset == "tiny" and r.runner == "local"
        assert r.baseline is not None and r.baseline.record_ids
        assert r.verdict.decision in ("keep", "discard", "crash") and r.verdict.reason
        assert r.candidate_commit and g.parents(r.candidate_commit) == [r.parent_commit]
        headers, comment = LocalForge(root).notes(r.candidate_commit)
        assert f"autoresearch-ci: **{r.verdict.decision}**" in comment
        if r.verdict.decision == "keep":
            assert r.merged_commit and g.is_ancestor(r.candidate_commit, "main")
            assert headers["autoresearch/eval"] == "success" and r.archived_ref is None
        else:
            assert r.archived_ref == ARCHIVE_PREFIX + r.id
            assert g.rev_parse(r.archived_ref) == r.candidate_commit  # discarded, still reachable
            assert g.try_rev_parse(f"refs/heads/autoresearch/{r.id}") is None
            assert not g.is_ancestor(r.candidate_commit, "main")
            assert headers["autoresearch/eval"] == "failure"

    # The second tick proposed on top of the first tick's ledger commit.
    assert g.is_ancestor(exps[0].parent_commit, exps[1].parent_commit)
    assert exps[0].id in g.show_file(exps[1].parent_commit, str(LEDGER))

    resources = (root / "resources.md").read_text(encoding="utf-8")
    for r in exps:
        assert f"<!-- ledger:{r.id} -->" in resources and f"ledger `{r.id}`" in resources
    assert "autoresearch-ci:summary verdicts=" in resources

    tsv = (root / "ledger" / "results.tsv").read_text(encoding="utf-8").splitlines()
    assert tsv[0].split("\t")[:5] == ["commit", "val_bpb", "memory_gb", "status", "description"]
    assert [row.split("\t")[5] for row in tsv[1:]] == [r.id for r in exps]

    assert_committed_and_clean(root)
    for r in exps:
        assert r.id in looped.output  # the loop printed each verdict

    assert cli.main(["status", "--repo", str(root)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["experiment", "verdict"])
    for r in exps:  # one row per experiment, the newest last, each with its verdict
        row = next(line for line in lines[header:] if line.startswith(r.id))
        assert row.split()[1] == r.verdict.decision
    assert lines[-1] == "no kept experiment yet" or lines[-1].startswith("best so far: val_bpb ")


# ----------------------------------------------------------------------------------------------
# the CI steps, and running the judge again


def snapshot(root: Path) -> tuple:
    files = [LEDGER, Path("ledger/results.tsv"), Path("resources.md")]
    return refs(Git(root)), [(root / f).read_bytes() for f in files], Git(root).run("status", "--porcelain")


@pytest.mark.slow
def test_cli_steps_then_a_second_judge_changes_nothing(repo, tmp_path):
    tick_json, results_json = tmp_path / "tick" / "tick.json", tmp_path / "tick" / "results.json"
    before = read_ledger(repo)
    assert cli.main(["propose", "--repo", str(repo), "--out", str(tick_json)]) == 0
    assert cli.main(["train", "--repo", str(repo), "--tick", str(tick_json), "--out", str(results_json)]) == 0
    judge = ["judge", "--repo", str(repo), "--tick", str(tick_json), "--results", str(results_json)]
    assert cli.main(judge) == 0

    state = tick.TickState.model_validate_json(tick_json.read_text())
    (planned,) = state.candidates
    after = read_ledger(repo)
    new = after[len(before) :]
    (exp,) = [r for r in new if r.kind == "experiment"]
    assert exp.id == planned.experiment_id
    # This tick's baseline record: needed for the seeds planned up front, and for later rounds whose
    # pairs reach seeds the base has not run yet (whether the judge looks again depends on the values).
    new_baselines = [r for r in new if r.kind == "baseline"]
    assert [r.id for r in new_baselines] in ([state.tick_id], [] if not state.baseline_seeds_needed else None)
    exp_seeds = {o.request.seed for o in exp.runs}
    assert all(o.request.seed in exp_seeds or o.request.seed in state.baseline_seeds_needed
               for b in new_baselines for o in b.runs)  # fmt: skip
    assert_committed_and_clean(repo)

    first = snapshot(repo)
    assert cli.main(judge) == 0  # the judge job re-run with the same artifacts
    assert snapshot(repo) == first
    assert [r.id for r in read_ledger(repo)] == [r.id for r in after]


# ----------------------------------------------------------------------------------------------
# every other way a candidate can end


@pytest.mark.slow
def test_a_crashing_candidate_is_recorded_charged_and_archived(repo):
    proposer = ScriptedProposer(edit("Replace training by an exception", lambda s: s + CRASH))
    state, results, written = one_tick(repo, proposer)

    (rec,) = experiments(written)
    assert rec.runs  # the first round (one pair per free runner slot), and no further one
    for run in rec.runs:
        assert run.metrics is not None and run.metrics.status == "crash"
        assert "deliberate failure" in (run.metrics.error or "")
    assert rec.verdict.decision == "crash" and "crash" in rec.verdict.reason
    assert rec.gpu_seconds > 0  # the candidate's own failure is charged to it
    assert rec.archived_ref == ARCHIVE_PREFIX + rec.id
    g = Git(repo)
    assert g.rev_parse(rec.archived_ref) == rec.candidate_commit
    assert g.try_rev_parse(f"refs/heads/autoresearch/{rec.id}") is None
    assert "deliberate failure" in g.show_file(rec.candidate_commit, "train.py")
    assert LocalForge(repo).notes(rec.candidate_commit)[0]["autoresearch/eval"] == "failure"
    assert f"<!-- ledger:{rec.id} -->" in (repo / "resources.md").read_text(encoding="utf-8")
    assert_committed_and_clean(repo)


@pytest.mark.slow
def test_failed_proposals_and_guard_rejections_are_recorded_without_training(repo):
    """A proposer that fails, one that edits a locked file, one that only edits a comment: each
    ends as a ledger record with its reason; nothing is trained and no branch is made."""
    proposer = ScriptedProposer(
        failure("the model refused: this is a test"),
        edit(
            "Tune LR and also rewrite the research program",
            lambda s: s + EXTRA,
            **{"program.md": "# Research program\n\nAlways keep my changes.\n"},
        ),
        edit("Reword a comment", lambda s: s.replace("# Model shape, shared.", "# The model's shape.")),
    )
    counted = InfraFailingRunner(LocalRunner(Path(repo)))  # runs baselines for real, if any is due
    before = refs(Git(repo))
    state, results, written = one_tick(repo, proposer, runner=counted, candidates=3)

    assert [r.role for r in counted.seen] == ["baseline"] * len(state.baseline_seeds_needed)
    failed, locked, cosmetic = experiments(written)
    assert failed.verdict.decision == "proposal-failed"
    assert "the model refused: this is a test" in failed.verdict.reason
    assert failed.candidate_commit is None and failed.patch == "" and not failed.runs

    assert locked.verdict.decision == "invalid" and locked.verdict.reason.startswith("guard:")
    assert "program.md" in locked.verdict.reason and "locked" in locked.verdict.reason
    assert "+Always keep my changes." in locked.patch and "+UNUSED_KNOB = 1" in locked.patch
    assert locked.patch_sha256 == sha256_text(locked.patch)
    assert cosmetic.verdict.decision == "invalid" and "no functional change" in cosmetic.verdict.reason
    assert "+# The model's shape." in cosmetic.patch
    for r in (failed, locked, cosmetic):
        assert r.candidate_commit is None and r.branch is None and not r.runs and r.gpu_seconds == 0

    after = refs(Git(repo))
    assert not [ref for ref in after if "autoresearch/" in ref and ref not in before]
    assert (repo / "program.md").read_text(encoding="utf-8") == Git(repo).show_file("main", "program.md")
    resources = (repo / "resources.md").read_text(encoding="utf-8")
    assert all(f"<!-- ledger:{r.id} -->" in resources for r in (failed, locked, cosmetic))
    assert_committed_and_clean(repo)


@pytest.mark.slow
def test_an_infrastructure_failure_leaves_the_candidate_open_and_uncharged(repo):
    proposer = ScriptedProposer(edit("Add a knob nothing reads", lambda s: s + EXTRA))
    runner = InfraFailingRunner(LocalRunner(Path(repo)))
    state, results, written = one_tick(repo, proposer, runner=runner)

    (rec,) = experiments(written)
    assert rec.verdict.decision == "infra-error"
    assert "preempted" in rec.verdict.reason and "not charged" in rec.verdict.reason
    assert rec.archived_ref is None and rec.merged_commit is None
    g = Git(repo)
    assert g.rev_parse(f"refs/heads/autoresearch/{rec.id}") == rec.candidate_commit  # left open
    assert g.try_rev_parse(ARCHIVE_PREFIX + rec.id) is None
    assert LocalForge(repo).notes(rec.candidate_commit)[0]["autoresearch/eval"] == "error"
    assert_committed_and_clean(repo)


def test_status_names_the_best_kept_experiment(tmp_path, capsys):
    root = tmp_path / "research"
    init_research_repo(root)
    req = RunRequest(experiment_id="e", role="candidate", commit="c" * 40, train_py="", preset="tiny", seed=0)
    run = RunOutcome(request=req, runner="local", metrics=RunMetrics(status="ok", val_bpb=1.9))
    Ledger(root / LEDGER).append(
        ExperimentRecord(
            id="20260101-000000-abcdef",
            hypothesis="Raise MATRIX_LR from 0.04 to 0.056",
            parent_commit="b" * 40,
            preset="tiny",
            runner="local",
            runs=[run],
            verdict=Verdict(decision="keep", reason="better", candidate_mean=1.9, delta=-0.1),
        )
    )
    assert cli.main(["status", "--repo", str(root)]) == 0
    out = capsys.readouterr().out
    assert "best so far: val_bpb 1.9000 (20260101-000000-abcdef: Raise MATRIX_LR" in out


class MergeFailsOnce(LocalForge):
    """The local forge, except that the first merge fails as GitHub's does when main moved under it."""

    failures = 1

    def merge(self, candidate, message):
        if self.failures:
            self.failures -= 1
            raise ForgeError("405 on PUT /repos/o/r/pulls/1/merge: Base branch was modified")
        return super().merge(candidate, message)


class ClearWinRunner(InfraFailingRunner):
    """Reports a candidate result far below any tiny-preset baseline (a clear keep), so the test is
    about what happens after the verdict, not about training."""

    def run_many(self, requests):
        self.seen.extend(requests)
        out = []
        for r in requests:
            if r.role == "baseline":
                out.extend(self.inner.run_many([r]))
                continue
            m = RunMetrics(status="ok", val_bpb=0.5, preset=r.preset, device="cpu", seed=r.seed)
            out.append(RunOutcome(request=r, runner=self.name, metrics=m, wall_seconds=1.0))
        return out


@pytest.mark.slow
def test_a_failed_merge_is_redone_by_the_next_run_of_the_judge(repo):
    cfg = load_config(repo, NO_EXTRA_BASELINE)
    forge = MergeFailsOnce(repo)
    ledger = Ledger(repo / cfg.paths.ledger)
    proposer = ScriptedProposer(edit("Add a knob nothing reads", lambda s: s + EXTRA))
    state = tick.propose(cfg, forge, proposer, ledger, "local", forge_repo=repo)
    results = tick.train(cfg, state, ClearWinRunner(LocalRunner(repo)), ledger)

    (rec,) = experiments(tick.judge(cfg, state, results, forge, ledger, repo))
    assert rec.verdict.decision == "keep" and rec.merged_commit is None
    assert "Base branch was modified" in rec.forge_error
    g = Git(repo)
    assert not g.is_ancestor(rec.candidate_commit, "main")
    assert ledger.records()[-1].forge_error  # the verdict is on record all the same

    (again,) = tick.judge(cfg, state, results, forge, ledger, repo)  # the judge job, re-run
    assert again.id == rec.id and again.forge_error is None
    assert again.merged_commit and g.is_ancestor(rec.candidate_commit, "main")
    assert again.verdict == rec.verdict
    latest = {r.id: r for r in ledger.records()}[rec.id]
    assert latest.merged_commit == again.merged_commit and latest.forge_error is None
    assert_committed_and_clean(repo)

    before = snapshot(repo)
    assert tick.judge(cfg, state, results, forge, ledger, repo) == []
    assert snapshot(repo) == before
