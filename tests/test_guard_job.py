"""The guard command where a candidate's code may run: not in the propose job (LLM key, write token),
but in a job of its own with neither (steps/guard.py), and train and judge wait for its verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.github_world import TRAIN, Runner
from support.tick_fixtures import ScriptedProposer, edit, set_knobs

from autoresearch_ci.config import load_config
from autoresearch_ci.forge.local import LocalForge
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.steps.guard import run_guard_commands
from autoresearch_ci.steps.judge import judge
from autoresearch_ci.steps.propose import propose
from autoresearch_ci.steps.state import GuardResults, TickState
from autoresearch_ci.steps.train import train

FIX = edit("Raise LR to 0.02.", lambda t: set_knobs(t, LR="0.02"))
# Says what it saw (the candidate's train.py? any secret?), leaves a mark that it ran, exits with CODE.
GUARD = (
    "python -c \"import os,json; print(json.dumps({'lr': 'LR = 0.02' in open('train.py').read(), "
    "'secrets': sorted(k for k in os.environ "
    "if k in ('ANTHROPIC_API_KEY','GITHUB_TOKEN','MODAL_TOKEN_ID'))}))"
    "; open('MARK','a').write('ran')\"; exit CODE"
)


def configure(repo, code: int = 0):
    guard = GUARD.replace("MARK", str(repo.parent / "ran")).replace("CODE", str(code))
    (repo / "autoresearch.toml").write_text(f'preset = "tiny"\nguard_command = {json.dumps(guard)}\n')
    return load_config(repo)


@pytest.fixture
def repo(tmp_path, monkeypatch):  # the secrets of the process that runs it: none may reach the command
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(TRAIN)
    (repo / "program.md").write_text("improve it\n")
    (repo / "resources.md").write_text("# Resources\n")
    configure(repo)
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, capture_output=True)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-must-not-leak")
    monkeypatch.setenv("GITHUB_TOKEN", "ghs-must-not-leak")
    return repo


def test_propose_leaves_the_guard_command_to_another_job(repo):
    cfg = load_config(repo)
    forge, ledger = LocalForge(repo), Ledger(repo / cfg.paths.ledger)
    state = propose(cfg, forge, ScriptedProposer(FIX), ledger, "local", defer_guard_command=True)
    (c,) = state.candidates
    assert c.guard_ok and c.guard_pending and not (repo.parent / "ran").exists()
    assert state.runnable() == []  # not trained before the guard job says so
    assert forge.notes(c.candidate.commit)[0]["autoresearch/eval"] == "pending"

    # The guard job: a fresh checkout, the command on base + the candidate's files, no secret.
    results = run_guard_commands(cfg, state, repo)
    (got,) = results.results.values()
    assert got.ok and json.loads(got.tail.strip().splitlines()[0]) == {"lr": True, "secrets": []}
    assert (repo.parent / "ran").read_text() == "ran"
    state.apply_guard(results)
    assert not c.guard_pending and c.guard_ok and state.runnable() == [c]


def test_a_failing_guard_command_makes_the_candidate_invalid(repo):
    cfg = load_config(repo)
    forge, ledger = LocalForge(repo), Ledger(repo / cfg.paths.ledger)
    state = propose(cfg, forge, ScriptedProposer(FIX), ledger, "local", defer_guard_command=True)
    cfg = configure(repo, 3)
    state.apply_guard(run_guard_commands(cfg, state, repo))
    (c,) = state.candidates
    assert not c.guard_ok and "guard command failed" in c.guard_reasons[-1]
    runner = Runner()
    results = train(cfg, state, runner, ledger)
    assert runner.seen == []  # the candidate is not trained (and a base with nothing to pair with is not)
    (rec,) = [r for r in judge(cfg, state, results, forge, ledger) if r.kind == "experiment"]
    assert rec.verdict.decision == "invalid" and "guard command failed" in rec.verdict.reason


def test_without_the_guard_jobs_verdict_nothing_is_trained_or_judged(repo):
    """The guard job did not run (or failed): the candidate waits, and the next tick settles it."""
    cfg = load_config(repo)
    forge, ledger = LocalForge(repo), Ledger(repo / cfg.paths.ledger)
    state = propose(cfg, forge, ScriptedProposer(FIX), ledger, "local", defer_guard_command=True)
    state.apply_guard(None)
    runner = Runner()
    results = train(cfg, state, runner, ledger)
    assert runner.seen == []  # nothing to pair with: not even the base is run
    assert judge(cfg, state, results, forge, ledger) == []
    (c,) = state.candidates
    assert [x.experiment_id for x in forge.open_candidates()] == [c.experiment_id]


def test_the_guard_command_writes_guard_json(repo, tmp_path):
    cfg = load_config(repo)
    state = propose(cfg, LocalForge(repo), ScriptedProposer(FIX), Ledger(repo / cfg.paths.ledger), "local",
                    defer_guard_command=True)  # fmt: skip
    (repo / "tick.json").write_text(state.model_dump_json())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    proc = subprocess.run(
        [sys.executable, "-m", "autoresearch_ci.cli", "guard", "--repo", str(repo),
         "--tick", str(repo / "tick.json"), "--out", str(tmp_path / "guard.json")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = GuardResults.model_validate_json((tmp_path / "guard.json").read_text())
    assert got.tick_id == state.tick_id and all(v.ok for v in got.results.values())
    assert TickState.model_validate_json((repo / "tick.json").read_text()).candidates[0].guard_pending
