"""Whole CI ticks against GitHub and Anthropic stand-ins that speak the real protocols.

What runs is what the workflow runs: `autoresearch-ci budget-check`, `propose --forge github
--proposer anthropic`, `train --runner local` and `judge --forge github`, each in a process of its
own, in a fresh clone of the repository (as every Actions job checks out anew; the train job's clone
is shallow, as actions/checkout's default), handing state on only through tick.json and
results.json. Each step runs as its job in .github/workflows/autoresearch.yml (read with a YAML
parser): with a GITHUB_TOKEN holding that job's `permissions:` and nothing more (the fake GitHub
enforces them, git pushes included, and the repository starts without its label), and with only the
secrets that job's steps name. tests/test_fork_tick.py plays the workflow itself, job by job.

- GitHub: the fake REST server (tests/support/fake_github.py) on 127.0.0.1, driven by the real
  PyGithub over HTTP and backed by a bare git repository that the clones push to as `origin`;
- Anthropic: the fake Messages API, driven by the real `anthropic` client, with scripted
  `submit_experiment` tool calls;
- training: the real local runner and the locked harness on the tiny preset.

The research repository's train.py is made deliberately weak (tests/support/tick_fixtures.py) so
that the scripted "fix" is kept and the scripted non-change discarded whatever the machine's load.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.actions import job_permissions, load, secrets_exposed
from support.fake_anthropic import FakeAnthropic, tool_reply
from support.fake_github import FakeGitHub
from support.tick_fixtures import (
    FIXED,
    ci_env,
    commit_all,
    init_research_repo,
    ledger_at,
    outputs,
    refs,
    run_step,
    set_knobs,
    weak_train_py,
)

from autoresearch_ci.forge.git import Git
from autoresearch_ci.report.pr import COMMENT_MARKER as RESULTS_MARKER
from autoresearch_ci.steps.state import TickResults, TickState

SLUG = "o/r"
TOKEN = "ghs_test_token"
RUN_URL = "https://github.test/o/r/actions/runs/4242"
WORKFLOW = load()
# The job of autoresearch.yml each step of these tests plays (training on this machine: self-hosted).
JOBS = {"budget": "preflight", "propose": "propose", "train": "train-self-hosted", "judge": "judge"}


def job_carries(job: str) -> tuple[dict[str, str], bool, bool]:
    """(permissions, carries GITHUB_TOKEN, carries ANTHROPIC_API_KEY) of a workflow job."""
    spec = WORKFLOW["jobs"][job]
    steps = json.dumps(spec["steps"])
    return (
        job_permissions(WORKFLOW, job),
        "github.token" in steps,
        "ANTHROPIC_API_KEY" in secrets_exposed(spec),
    )


@dataclass
class World:
    tmp: Path
    bare: Git
    gh: FakeGitHub
    llm: FakeAnthropic
    jobs: int = 0
    last: dict[str, Path] = field(default_factory=dict)
    run_id: str = "4241"  # the Actions run the steps belong to (a tick is a run; ci_tick moves it on)

    def checkout(self, name: str, shallow: bool = False) -> Path:
        """A fresh clone of origin's main, as actions/checkout makes for each job."""
        self.jobs += 1
        dest = self.tmp / "jobs" / f"{self.jobs:02d}-{name}"
        depth = ["--depth", "1"] if shallow else []
        subprocess.run(
            ["git", "clone", "-q", *depth, "-b", "main", f"file://{self.bare.dir}", str(dest)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return dest

    def step(
        self, job: str, *args: str, shallow: bool = False, run_id: str | None = None
    ) -> subprocess.CompletedProcess:
        """One CLI step of one job, with the token, permissions and secrets that job has in the workflow."""
        permissions, token, llm = job_carries(JOBS.get(job, "preflight"))
        repo = self.checkout(job, shallow=shallow)
        self.last[job] = repo
        env = {
            "GITHUB_REPOSITORY": SLUG,
            "GITHUB_API_URL": self.gh.base_url,
            "GITHUB_SERVER_URL": "https://github.test",
            "GITHUB_RUN_ID": run_id or self.run_id,
            "GITHUB_OUTPUT": str(repo.parent / f"{repo.name}.output"),
            "GITHUB_STEP_SUMMARY": str(repo.parent / f"{repo.name}.summary.md"),
        }
        if token:
            env["GITHUB_TOKEN"] = self.gh.add_token(f"ghs_{job}_{self.jobs}", permissions)
        if llm:
            env |= {"ANTHROPIC_API_KEY": "sk-test", "ANTHROPIC_BASE_URL": self.llm.url}
        return run_step([args[0], "--repo", str(repo), *args[1:]], ci_env(env))

    def output(self, job: str) -> dict[str, str]:
        repo = self.last[job]
        return outputs(repo.parent / f"{repo.name}.output")

    def summary(self, job: str) -> str:
        repo = self.last[job]
        return (repo.parent / f"{repo.name}.summary.md").read_text(encoding="utf-8")

    def main_train_py(self) -> str:
        return self.bare.show_file("main", "train.py")

    def writes(self, since: int = 0) -> list:
        return [r for r in self.gh.log[since:] if r.method != "GET"]


@pytest.fixture
def world(tmp_path, cache_dir):
    """A research repository made by `autoresearch-ci init --preset tiny` with a weak train.py,
    pushed to a bare `origin` that the fake GitHub serves, and the fake Messages API."""
    seed = tmp_path / "seed"
    g = init_research_repo(seed)
    (seed / "train.py").write_text(weak_train_py((seed / "train.py").read_text()), encoding="utf-8")
    commit_all(g, "a deliberately weak train.py for the test")
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(tmp_path / "origin.git")], check=True)
    with (
        FakeGitHub(tmp_path / "origin.git", slug=SLUG, token=TOKEN, enforce_git=True, labels=()) as gh,
        FakeAnthropic() as llm,
    ):
        yield World(tmp_path, Git(tmp_path / "origin.git"), gh, llm)


def reply(hypothesis: str, train_py: str):
    return tool_reply({"hypothesis": hypothesis, "train_py": train_py})


def propose(w: World, tick_json: Path) -> TickState:
    w.step(
        "propose",
        "propose",
        "--forge",
        "github",
        "--proposer",
        "anthropic",
        "--runner",
        "local",
        "--out",
        str(tick_json),
    )
    return TickState.model_validate_json(tick_json.read_text(encoding="utf-8"))


def ci_tick(w: World, name: str, hypothesis: str, train_py: str) -> tuple[TickState, TickResults, Path, Path]:
    """budget-check, propose, train and judge, each as its own job."""
    art = w.tmp / "artifacts" / name
    tick_json, results_json = art / "tick.json", art / "results.json"
    w.run_id = str(int(w.run_id) + 1)  # every tick is an Actions run of its own
    w.llm.push(reply(hypothesis, train_py))
    w.step("budget", "budget-check")
    assert w.output("budget") == {"go": "true"}
    state = propose(w, tick_json)
    assert w.output("propose")["runnable"] == str(len(state.runnable()) + len(state.baseline_seeds_needed))
    w.step(
        "train",
        "train",
        "--tick",
        str(tick_json),
        "--runner",
        "local",
        "--out",
        str(results_json),
        shallow=True,
    )
    w.step(
        "judge",
        "judge",
        "--forge",
        "github",
        "--tick",
        str(tick_json),
        "--results",
        str(results_json),
    )
    results = TickResults.model_validate_json(results_json.read_text(encoding="utf-8"))
    return state, results, tick_json, results_json


def assert_judge_rerun_changes_nothing(w: World, tick_json: Path, results_json: Path) -> None:
    """The judge job re-run with the same artifacts: no request that writes, nothing on origin moves."""
    before_refs, before_log = refs(w.bare), len(w.gh.log)
    pulls = json.dumps(w.gh.pulls, sort_keys=True)
    w.step(
        "judge",
        "judge",
        "--forge",
        "github",
        "--tick",
        str(tick_json),
        "--results",
        str(results_json),
    )
    assert w.writes(before_log) == []
    assert refs(w.bare) == before_refs
    assert json.dumps(w.gh.pulls, sort_keys=True) == pulls


def pr_url(number: int) -> str:
    return f"https://github.test/{SLUG}/pull/{number}"


def states(w: World, sha: str) -> list[str]:
    """The autoresearch/eval statuses of a commit, oldest first."""
    return [s["state"] for s in reversed(w.gh.statuses.get(sha, [])) if s["context"] == "autoresearch/eval"]


@pytest.mark.slow
def test_two_ci_ticks_discard_then_keep(world, prepared_tiny):
    w = world
    weak = w.main_train_py()

    # ---- tick 1: a change that changes nothing measurable -> discard, PR closed, branch deleted
    still_weak = set_knobs(weak, LR_SCALE="2e-6")
    state, results, tick_json, results_json = ci_tick(
        w, "t1", "Double LR_SCALE to learn a bit faster.", still_weak
    )
    assert len(state.baseline_seeds_needed) >= 2  # nothing measured yet: the base is measured first
    (c1,) = state.candidates
    assert c1.guard_ok and c1.candidate is not None and c1.proposal.proposer.startswith("anthropic:")
    cand = c1.candidate
    pr = w.gh.pulls[cand.pr_number]
    assert pr["head"] == cand.branch == f"autoresearch/{c1.experiment_id}"
    assert "Double LR_SCALE to learn a bit faster." in pr["body"] and pr["title"].startswith("autoresearch:")
    assert w.gh.issue_labels[cand.pr_number] == ["autoresearch"]
    assert states(w, cand.commit) == ["pending", "failure"]
    assert all(s["target_url"] == RUN_URL for s in w.gh.statuses[cand.commit])
    (comment,) = w.gh.comments_on(cand.pr_number)
    assert comment.startswith(RESULTS_MARKER) and "**discard**" in comment
    assert "| candidate" in comment and "| baseline" in comment  # the results table
    assert pr["state"] == "closed" and not pr["merged"]
    assert w.gh.branch_sha(cand.branch) is None  # deleted; the commit lives on in refs/pull/N/head
    assert w.bare.rev_parse(f"refs/pull/{cand.pr_number}/head") == cand.commit
    assert w.main_train_py() == weak

    main1 = w.bare.rev_parse("main")
    recs = ledger_at(w.bare, "main")
    tick1_ids = [r.id for r in recs]
    assert [r.kind for r in recs] == ["baseline", "experiment"] and recs[0].id == state.tick_id
    exp1 = recs[1]
    assert exp1.id == c1.experiment_id and exp1.verdict.decision == "discard"
    assert exp1.pr_number == cand.pr_number and exp1.pr_url == pr_url(cand.pr_number)
    assert exp1.candidate_commit == cand.commit and exp1.actions_run_url == RUN_URL
    assert exp1.llm.input_tokens == 1200 and exp1.llm.output_tokens == 400 and exp1.cost_usd > 0
    assert exp1.patch.startswith("diff --git a/train.py") and "+LR_SCALE = 2e-6" in exp1.patch
    assert exp1.archived_ref == pr_url(cand.pr_number)
    assert f"<!-- ledger:{exp1.id} -->" in w.bare.show_file("main", "resources.md")
    assert exp1.id in w.bare.show_file("main", "ledger/results.tsv")
    assert w.bare.message("main").startswith("autoresearch: ledger for tick")
    assert exp1.id in w.summary("judge")
    assert_judge_rerun_changes_nothing(w, tick_json, results_json)

    # ---- tick 2: the fix -> keep, squash-merged, ledger pushed on top of the merge
    fixed = set_knobs(weak, **FIXED)
    state, results, tick_json, results_json = ci_tick(
        w, "t2", "Remove the logit bonus and restore the LRs.", fixed
    )
    assert state.base_commit == main1  # proposed on top of tick 1's ledger commit
    sent = json.dumps(w.llm.requests[-1]["body"])
    assert exp1.id in sent  # the model was shown the ledger
    (c2,) = state.candidates
    cand = c2.candidate
    pr = w.gh.pulls[cand.pr_number]
    assert cand.pr_number == 2 and len(w.gh.pulls) == 2
    assert states(w, cand.commit) == ["pending", "success"]
    (comment,) = w.gh.comments_on(cand.pr_number)
    assert "**keep**" in comment
    assert pr["merged"] and pr["state"] == "closed"
    squash = pr["merge_commit_sha"]
    assert len(w.bare.parents(squash)) == 1  # a squash, not a merge commit
    assert w.bare.show_file(squash, "train.py") == fixed and w.main_train_py() == fixed
    assert w.bare.is_ancestor(squash, "main")

    recs = ledger_at(w.bare, "main")
    assert [r.id for r in recs[:2]] == tick1_ids  # appended to, never rewritten
    assert [r.id for r in recs[2:]] == [state.tick_id] * bool(state.baseline_seeds_needed) + [
        c2.experiment_id
    ]
    exp2 = recs[-1]
    assert exp2.id == c2.experiment_id and exp2.verdict.decision == "keep"
    assert exp2.merged_commit == squash and exp2.verdict.delta < -0.1
    # The judge counted tick 1's baseline too: train.py was the same bytes on both bases.
    assert exp1.tick in exp2.baseline.record_ids
    assert w.bare.message("main").startswith("autoresearch: ledger for tick")
    merges = w.gh.count("PUT", r"/pulls/\d+/merge$")
    assert merges == 1
    assert_judge_rerun_changes_nothing(w, tick_json, results_json)
    assert w.gh.count("PUT", r"/pulls/\d+/merge$") == merges

    out = w.step("status", "status").stdout
    assert f"best so far: val_bpb {exp2.verdict.candidate_mean:.4f} ({exp2.id}: " in out
    assert any(line.startswith(f"{exp2.id}  keep") for line in out.splitlines())


@pytest.mark.parametrize("answered", [False, True], ids=["502-before", "502-after-creating"])
def test_a_502_on_pull_request_creation_still_opens_exactly_one_pr(world, answered):
    """The first POST /pulls fails with 502 (before GitHub acted, or after it made the PR and the
    answer was lost); PyGithub retries, and the tick ends with one PR, labelled and pending."""
    w = world
    w.gh.fail("POST", r"/pulls$", 502, after=answered)
    w.llm.push(reply("Remove the logit bonus.", set_knobs(w.main_train_py(), LOGIT_PENALTY="0.0")))
    state = propose(w, w.tmp / "tick.json")

    (c,) = state.candidates
    assert c.guard_ok and c.candidate is not None
    assert [r.status for r in w.gh.requests("POST", r"/pulls$")] == [502, 422 if answered else 201]
    assert list(w.gh.pulls) == [c.candidate.pr_number] == [1]
    assert w.gh.issue_labels[1] == ["autoresearch"]
    assert states(w, c.candidate.commit) == ["pending"]
    assert "(https://github.test/o/r/pull/1)" in w.summary("propose")


def test_rerunning_the_propose_job_opens_no_second_pr(world):
    """ "Re-run jobs" runs propose again in the same Actions run: the ids derive from the run, so the
    re-run finds the candidate the first attempt opened and takes it up, without asking the LLM."""
    w = world
    text = set_knobs(w.main_train_py(), LOGIT_PENALTY="0.0")
    w.llm.push(reply("Remove the logit bonus.", text), reply("Remove the logit bonus.", text))
    first = propose(w, w.tmp / "a" / "tick.json")
    again = propose(w, w.tmp / "b" / "tick.json")  # "Re-run failed jobs" after the artifact upload failed
    assert len(w.gh.pulls) == 1 and len(w.llm.requests) == 1
    assert again.tick_id == first.tick_id
    assert [c.candidate for c in again.candidates] == [c.candidate for c in first.candidates]
    assert [c.proposal.hypothesis for c in again.candidates] == ["Remove the logit bonus."]


def test_a_new_run_proposes_anew(world):
    """Another Actions run (the next tick) gets ids of its own."""
    w = world
    text = set_knobs(w.main_train_py(), LOGIT_PENALTY="0.0")
    w.llm.push(reply("Remove the logit bonus.", text), reply("Remove the logit bonus.", text))
    first = propose(w, w.tmp / "a" / "tick.json")
    w.step("propose", "propose", "--forge", "github", "--proposer", "anthropic", "--runner", "local",
           "--out", str(w.tmp / "b" / "tick.json"), run_id="4299")  # fmt: skip
    second = TickState.model_validate_json((w.tmp / "b" / "tick.json").read_text())
    assert second.tick_id != first.tick_id and len(w.gh.pulls) == 2
