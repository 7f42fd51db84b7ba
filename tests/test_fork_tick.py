"""The whole tick, as a fork sees it: .github/workflows/autoresearch.yml played job by job.

A fork starts bare: no `autoresearch` label, Pages on, its secrets set, and the Actions settings the
README asks for. tests/support/actions.py plays the workflow as GitHub would: each job's `if:`, a
GITHUB_TOKEN per job holding exactly its `permissions:` (the fake GitHub refuses anything else with
GitHub's 403, git pushes included), secrets only where the workflow names them, step outputs, job
outputs and artifacts. What runs in each step is this checkout's `autoresearch-ci`, unchanged; only
the remote services are stand-ins that speak their protocols: the fake GitHub REST server
(PyGithub over HTTP, a real bare git repository behind it), the fake Messages API (the anthropic
SDK), and Modal's remote hop played locally (tests/support/modal_standin: the deployed functions'
bodies through `.local()`, the real harness on the tiny preset).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.actions import Run
from support.fake_anthropic import FakeAnthropic, tool_reply
from support.fake_github import FakeGitHub
from support.tick_fixtures import FIXED, commit_all, init_research_repo, ledger_at, set_knobs, weak_train_py

from autoresearch_ci.forge.git import Git

SLUG = "fork-owner/autoresearch-ci"
SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-test-0001",
    "MODAL_TOKEN_ID": "ak-test-0001",
    "MODAL_TOKEN_SECRET": "as-test-0001",
}
STANDIN = Path(__file__).resolve().parent / "support" / "modal_standin"
# A guard command that runs the candidate's file, as a test suite would (it must never see a secret).
GUARD = "python -c \"import ast; ast.parse(open('train.py').read()); print('train.py parses')\""


@dataclass
class Fork:
    tmp: Path
    bare: Git
    gh: FakeGitHub
    llm: FakeAnthropic
    modal_dir: Path

    def run(self, secrets: dict[str, str] = SECRETS, **kw) -> Run:
        env = {
            "PYTHONPATH": str(STANDIN),
            "FAKE_MODAL_DIR": str(self.modal_dir),
            "ANTHROPIC_BASE_URL": self.llm.url,
        }
        return Run(self.gh, self.tmp / f"run{len(list(self.tmp.glob('run*')))}", secrets=secrets,
                   machine_env=env, **kw)  # fmt: skip

    def modal_log(self, name: str) -> list[dict]:
        path = self.modal_dir / name
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def fork(tmp_path, prepared_tiny):
    """A fresh fork: the template with a deliberately weak train.py (see tick_fixtures), the tiny
    preset, a guard command; on GitHub no label yet, Pages on, both Actions settings of the README on;
    Modal's app deployed and its token in the secrets."""
    seed = tmp_path / "seed"
    g = init_research_repo(seed)
    (seed / "train.py").write_text(weak_train_py((seed / "train.py").read_text()), encoding="utf-8")
    toml = (seed / "autoresearch.toml").read_text()
    (seed / "autoresearch.toml").write_text(toml + f"guard_command = {json.dumps(GUARD)}\n", encoding="utf-8")
    commit_all(g, "the fork's research repository")
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(tmp_path / "origin.git")], check=True)
    modal_dir = tmp_path / "modal"
    modal_dir.mkdir()
    (modal_dir / "config.json").write_text(
        json.dumps(
            {
                "token_id": SECRETS["MODAL_TOKEN_ID"],
                "token_secret": SECRETS["MODAL_TOKEN_SECRET"],
                "deployed": ["autoresearch-ci"],
            }
        )
    )
    with (
        FakeGitHub(tmp_path / "origin.git", slug=SLUG, token=None, enforce_git=True, labels=()) as gh,
        FakeAnthropic() as llm,
    ):
        gh.actions_settings = {
            "default_workflow_permissions": "read",
            "can_approve_pull_request_reviews": True,
        }
        gh.pages = {"build_type": "workflow", "status": "built"}
        yield Fork(tmp_path, Git(tmp_path / "origin.git"), gh, llm, modal_dir)


def results(run: Run) -> dict[str, str]:
    return {name: j.result for name, j in run.jobs.items()}


def assert_secrets_stay_in_their_jobs(run: Run) -> None:
    """No step of a job saw a secret (or the job's write token) that its job does not carry."""
    allowed = {
        "ANTHROPIC_API_KEY": {"propose"},
        "MODAL_TOKEN_ID": {"preflight-modal", "train-modal"},
        "MODAL_TOKEN_SECRET": {"preflight-modal", "train-modal"},
    }
    for job in run.jobs.values():
        for step in job.steps:
            values = set(step.env.values())
            for name, jobs in allowed.items():
                if run.secrets.get(name) in values:
                    assert job.name in jobs, f"{job.name} / {step.name} saw {name}"
            if job.token in values:
                assert job.name in ("preflight", "propose", "judge"), (
                    f"{job.name} / {step.name} has its token"
                )


@pytest.mark.slow
def test_a_fresh_fork_ticks_end_to_end_and_every_job_can_be_rerun(fork):
    f = fork
    weak = f.bare.show_file("main", "train.py")
    fixed = set_knobs(weak, **FIXED)
    f.llm.push(tool_reply({"hypothesis": "Remove the logit bonus and restore the LRs.", "train_py": fixed}))
    run = f.run()

    # ---- up to the PR, then "Re-run jobs" on propose: the same PR, no second one
    run.play(stop_after="propose")
    assert results(run)["preflight"] == "success", run.step_log("preflight")
    assert results(run)["preflight-modal"] == "success", run.step_log("preflight-modal")
    assert results(run)["preflight-self-hosted"] == "skipped"
    assert results(run)["propose"] == "success", run.step_log("propose")
    doctor = run.jobs["preflight"].summary
    assert "autoresearch-ci doctor: ready" in doctor and "label “autoresearch”" in doctor
    assert "missing: the first tick creates it" in doctor  # a fresh fork has no label: a warning only
    (pr,) = f.gh.pulls.values()
    assert list(f.gh.labels) == ["autoresearch"] and f.gh.labels["autoresearch"]["color"] == "0e8a16"
    assert f.gh.issue_labels[pr["number"]] == ["autoresearch"]
    tick = json.loads(run.artifacts["tick"]["tick.json"])
    (cand,) = tick["candidates"]
    assert cand["guard_pending"] is True  # the guard command is not run where the LLM key is
    assert "train.py parses" not in run.step_log("propose")
    commit = cand["candidate"]["commit"]
    status_posts = [r for r in f.gh.requests("POST", r"/statuses/") if r.status == 201]
    assert status_posts and all(r.token == run.jobs["propose"].token for r in status_posts)
    assert f.gh.latest_status(commit)["state"] == "pending"

    before = (dict(f.gh.pulls), f.gh.count("POST", r"/pulls$"))
    run.rerun("propose")
    assert run.jobs["propose"].result == "success", run.step_log("propose")
    assert len(f.gh.pulls) == 1 and f.gh.count("POST", r"/pulls$") == before[1]  # probe POSTs are 422s
    again = json.loads(run.artifacts["tick"]["tick.json"])  # overwritten by the re-run
    assert [c["experiment_id"] for c in again["candidates"]] == [cand["experiment_id"]]
    assert again["tick_id"] == tick["tick_id"] and len(f.llm.requests) == 1  # no second LLM call

    # ---- the rest of the tick
    run.play(start_after="propose")
    r = results(run)
    assert r["guard"] == "success", run.step_log("guard")
    guarded = json.loads(run.artifacts["guard"]["guard.json"])["results"][cand["experiment_id"]]
    assert guarded["ok"] and "train.py parses" in guarded["tail"]
    assert r["train-modal"] == "success", run.step_log("train-modal")
    assert r["train-self-hosted"] == "skipped"
    assert r["judge"] == "success", run.step_log("judge")
    assert r["publish"] == "success", run.step_log("publish")
    assert_secrets_stay_in_their_jobs(run)

    spawned = f.modal_log("calls.jsonl")
    kinds = [c["function"] for c in spawned]
    assert kinds.count("prepare_data") == 1 and kinds.count("run_candidate") >= 3  # baselines + candidate
    assert f.modal_log("cancelled.jsonl") == []  # nothing left to cancel
    pr = f.gh.pulls[pr["number"]]
    assert pr["merged"] and f.bare.show_file("main", "train.py") == fixed
    assert f.gh.latest_status(commit)["state"] == "success"
    recs = ledger_at(f.bare, "main")
    exp = recs[-1]
    assert [x.kind for x in recs] == ["baseline", "experiment"] and exp.verdict.decision == "keep"
    assert exp.id == cand["experiment_id"] and exp.merged_commit == pr["merge_commit_sha"]
    gpu_usd = exp.gpu_seconds * 3.95 / 3600
    assert exp.gpu_seconds > 0 and exp.cost_usd == pytest.approx(gpu_usd + exp.llm.cost_usd)  # GPU priced
    assert f"<!-- ledger:{exp.id} -->" in f.bare.show_file("main", "resources.md")
    # the re-run of propose made this attempt 2 (GitHub re-runs a job's dependents with it)
    assert "index.html" in run.artifacts["github-pages-2"] and run.deployed == ["github-pages-2"]

    # ---- re-run the judge and the publish job: nothing new, no failed upload
    records, main = len(recs), f.bare.rev_parse("main")
    run.rerun("judge")
    assert run.jobs["judge"].result == "success" and f.bare.rev_parse("main") == main
    assert len(ledger_at(f.bare, "main")) == records
    run.rerun("publish")
    assert run.jobs["publish"].result == "success", run.step_log("publish")
    assert run.deployed[-1] == f"github-pages-{run.attempt}" == "github-pages-4"


def test_with_the_actions_settings_off_the_preflight_stops_the_tick(fork):
    f = fork
    f.gh.actions_settings = {
        "default_workflow_permissions": "read",
        "can_approve_pull_request_reviews": False,
    }
    run = f.run()
    run.play()
    r = results(run)
    assert r["preflight"] == "failure"
    assert all(r[j] == "skipped" for j in r if j != "preflight"), r
    summary = run.jobs["preflight"].summary
    assert "GitHub Actions may open pull requests" in summary and "❌ fail" in summary
    assert "Allow GitHub Actions to create and approve pull requests" in summary
    assert f.gh.pulls == {} and "autoresearch/" not in f.bare.run("branch", "--list")
    assert len(f.llm.requests) == 0


def test_a_fork_without_modal_secrets_is_stopped_before_any_pr(fork):
    f = fork
    run = f.run(secrets={"ANTHROPIC_API_KEY": SECRETS["ANTHROPIC_API_KEY"]})
    run.play()
    r = results(run)
    assert r["preflight"] == "failure" and r["propose"] == "skipped" and r["train-modal"] == "skipped"
    summary = run.jobs["preflight"].summary
    for name in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"):
        assert f"| secrets | {name} | ❌ fail | not set: the Modal runner needs it" in summary
    assert "gh secret set MODAL_TOKEN_ID" in summary and "API Tokens" in summary
    assert f.gh.pulls == {} and len(f.llm.requests) == 0
    assert [x.path for x in f.gh.log if x.method == "POST" and x.status not in (403, 422)] == []
