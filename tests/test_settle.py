"""No orphans: what earlier ticks left without a result is trained again or closed, with a record.

The steps run in process against the fake GitHub with the propose and judge jobs' own permissions
(tests/support/github_world.py); training is a stand-in runner, so what is tested is settle, propose
and judge: the product code.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from support.github_world import TRAIN, make_world
from support.tick_fixtures import edit, failure, set_knobs

from autoresearch_ci.config import load_config
from autoresearch_ci.forge.git import Git
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.steps.settle import TickIds, settle


@pytest.fixture
def world(tmp_path):
    yield from make_world(tmp_path, 'preset = "tiny"\n[github]\nretrain_limit = 1\n')


FIX = edit("Raise LR to 0.02.", lambda t: set_knobs(t, LR="0.02"))


def test_a_candidate_whose_tick_died_before_the_judge_is_trained_again_and_judged(world):
    w = world
    first, _ = w.tick("101", [FIX], judge_it=False)  # the train job was cancelled: no judge
    (c,) = first.candidates
    assert w.gh.pulls[1]["state"] == "open"
    assert "ledger/experiments.jsonl" not in w.gh.git.run("ls-tree", "-r", "--name-only", "main")

    state, records = w.tick("102", [])  # the next tick: the proposer is not asked (the slot is taken)
    (carried,) = state.candidates
    assert carried.experiment_id == c.experiment_id and carried.carried_from == first.tick_id
    assert carried.candidate == c.candidate and carried.proposal.hypothesis == "Raise LR to 0.02."
    rec = w.ledger()[c.experiment_id]
    assert rec.verdict.decision == "keep" and rec.tick == state.tick_id
    assert w.gh.pulls[1]["merged"] and len(w.gh.pulls) == 1
    notes = [b for b in w.gh.comments_on(1) if "autoresearch-ci:note retrain" in b]
    assert len(notes) == 1 and "trained again in tick" in notes[0]


def test_an_infra_error_is_trained_again_then_closed_with_its_reason_past_the_limit(world):
    w = world
    first, recs = w.tick("201", [FIX], down=True)
    (c,) = first.candidates
    assert w.ledger()[c.experiment_id].verdict.decision == "infra-error"
    assert w.gh.pulls[1]["state"] == "open"  # the judge leaves it for a re-run

    second, _ = w.tick("202", [], down=True)  # retrain_limit = 1: one more try
    assert [x.experiment_id for x in second.candidates] == [c.experiment_id]
    rec = w.ledger()[c.experiment_id]
    assert rec.verdict.decision == "infra-error" and rec.tick == second.tick_id  # replaced, not added

    third, _ = w.tick("203", [failure("no idea today")], down=True)  # past the limit: closed, recorded
    assert c.experiment_id not in [x.experiment_id for x in third.candidates]  # the slot went to a new one
    rec = w.ledger()[c.experiment_id]
    assert rec.verdict.decision == "infra-error" and rec.verdict.reason.startswith(
        "closed: no result after 2 tick(s)"
    )
    assert "preempted" in rec.verdict.reason
    pr = w.gh.pulls[1]
    assert (
        pr["state"] == "closed" and not pr["merged"] and rec.archived_ref == "https://github.test/o/r/pull/1"
    )
    assert w.gh.latest_status(c.candidate.commit)["state"] == "error"
    assert any("closed: no result" in b for b in w.gh.comments_on(1))
    assert w.gh.branch_sha(c.candidate.branch) is None
    assert list(w.ledger()).count(c.experiment_id) == 1  # one experiment, however many lines it took


def test_a_candidate_whose_base_train_py_changed_is_closed_as_stale(world):
    w = world
    first, _ = w.tick("301", [FIX], judge_it=False)
    (c,) = first.candidates
    # Meanwhile main's train.py changes (a person's commit): the candidate's baseline is gone.
    repo = w.clone()
    (repo / "train.py").write_text(TRAIN.replace("STEPS = 10", "STEPS = 12"))
    Git(repo).run("commit", "-qam", "a person's change")
    token = w.gh.add_token("owner-push", {"contents": "write"})
    env = {**os.environ, "GITHUB_TOKEN": token}
    subprocess.run(["git", "-C", str(repo), "push", "-q", "origin", "main"], check=True, env=env)
    state, _ = w.tick("302", [edit("Another idea.", lambda t: t.replace("STEPS = 12", "STEPS = 14"))])
    assert [x.experiment_id for x in state.candidates] != [c.experiment_id]
    rec = w.ledger()[c.experiment_id]
    assert (
        rec.verdict.reason == "closed: main's train.py changed since it was proposed, so its baseline is gone"
    )
    assert w.gh.pulls[1]["state"] == "closed"


def test_settle_leaves_this_runs_own_candidates_and_judged_ones_alone(world):
    w = world
    first, _ = w.tick("401", [FIX], judge_it=False)
    repo = w.clone()
    cfg = load_config(repo)
    forge = w.forge("propose", repo)
    ids = TickIds(first.tick_id, "401", first.tick_id.rsplit("-", 1)[0])  # a re-run of run 401
    assert settle(cfg, forge, Ledger(repo / cfg.paths.ledger), ids).carried == []
    assert w.gh.comments_on(1) == []
