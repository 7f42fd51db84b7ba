"""The GitHub loop does not merge by itself a keep whose runs had no sandbox (isolation: none)."""

from __future__ import annotations

import subprocess

import pytest
from support.github_world import TRAIN, Runner, make_world
from support.tick_fixtures import ScriptedProposer, edit, set_knobs

from autoresearch_ci.config import load_config
from autoresearch_ci.forge.local import LocalForge
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.steps.judge import judge
from autoresearch_ci.steps.propose import propose
from autoresearch_ci.steps.train import train

FIX = edit("Raise LR to 0.02.", lambda t: set_knobs(t, LR="0.02"))


@pytest.fixture
def world(tmp_path):
    yield from make_world(tmp_path)


@pytest.fixture
def allowing(tmp_path):
    yield from make_world(tmp_path, 'preset = "tiny"\n[github]\nallow_unisolated_merge = true\n')


def test_a_keep_without_sandbox_waits_for_a_person(world):
    w = world
    w.runner.isolation = "none"
    state, records = w.tick("501", [FIX])
    (c,) = state.candidates
    rec = w.ledger()[c.experiment_id]
    assert rec.verdict.decision == "keep" and rec.merged_commit is None  # the verdict stands
    assert "isolation: none" in rec.held and "allow_unisolated_merge" in rec.held
    pr = w.gh.pulls[c.candidate.pr_number]
    assert pr["state"] == "open" and not pr["merged"]
    (comment,) = [b for b in w.gh.comments_on(pr["number"]) if "**keep**" in b]
    assert "**Not merged.**" in comment and "merge by hand" in comment
    status = w.gh.latest_status(c.candidate.commit)
    assert status["state"] == "success" and status["description"].startswith("keep, held for review")
    # The next tick leaves it alone: judged, waiting for a person (not an orphan).
    state, _ = w.tick("502", [edit("Another.", lambda t: t.replace("STEPS = 10", "STEPS = 11"))])
    assert c.experiment_id not in [x.experiment_id for x in state.candidates]
    assert w.gh.pulls[c.candidate.pr_number]["state"] == "open"


def test_the_config_can_allow_it(allowing):
    w = allowing
    w.runner.isolation = "none"
    state, _ = w.tick("601", [FIX])
    (c,) = state.candidates
    rec = w.ledger()[c.experiment_id]
    assert rec.held is None and w.gh.pulls[c.candidate.pr_number]["merged"]


@pytest.mark.parametrize("isolation", ["bwrap", None])
def test_a_sandboxed_or_silent_harness_is_merged(world, isolation):
    w = world
    w.runner.isolation = isolation
    state, _ = w.tick("701", [FIX])
    (c,) = state.candidates
    assert w.gh.pulls[c.candidate.pr_number]["merged"] and w.ledger()[c.experiment_id].held is None


def test_the_local_loop_is_unaffected(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text(TRAIN)
    (repo / "program.md").write_text("improve it\n")
    (repo / "resources.md").write_text("# Resources\n")
    (repo / "autoresearch.toml").write_text('preset = "tiny"\n')
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, capture_output=True)
    cfg = load_config(repo)
    forge, ledger, runner = LocalForge(repo), Ledger(repo / cfg.paths.ledger), Runner()
    runner.isolation = "none"
    state = propose(cfg, forge, ScriptedProposer(FIX), ledger, "local")
    (rec,) = [
        r
        for r in judge(cfg, state, train(cfg, state, runner, ledger), forge, ledger)
        if r.kind == "experiment"
    ]
    assert rec.verdict.decision == "keep" and rec.merged_commit and rec.held is None
