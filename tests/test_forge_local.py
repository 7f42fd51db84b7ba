"""LocalForge: candidates as branches, merges into main, archives, notes, and the ledger's push."""

from __future__ import annotations

import pytest
from support.gitrepo import clone, init_bare_remote, init_repo

from autoresearch_ci.forge.base import ForgeError
from autoresearch_ci.forge.git import Git
from autoresearch_ci.forge.local import ARCHIVE_PREFIX, LocalForge

NEW_TRAIN = "LR = 0.02\nSTEPS = 10\n"


@pytest.fixture
def work(tmp_path) -> Git:
    return init_repo(tmp_path / "work")


def open_one(forge: LocalForge, exp_id: str = "20261122-141503-3f2a9c", text: str = NEW_TRAIN):
    return forge.open_candidate(
        exp_id, forge.base_commit(), {"train.py": text}, "Raise LR", "Hypothesis: faster."
    )


def test_open_candidate_is_one_commit_on_its_branch_and_idempotent(work):
    forge = LocalForge(work.dir)
    base = forge.base_commit()
    cand = open_one(forge)
    assert cand.branch == "autoresearch/20261122-141503-3f2a9c"
    assert cand.base_commit == base
    assert work.rev_parse(f"refs/heads/{cand.branch}") == cand.commit
    assert work.parents(cand.commit) == [base]
    assert forge.read_file(cand.commit, "train.py") == NEW_TRAIN
    assert forge.changed_files(base, cand.commit) == ["train.py"]
    assert "+LR = 0.02" in forge.diff(base, cand.commit)
    assert "Raise LR" in work.message(cand.commit) and "Hypothesis: faster." in work.message(cand.commit)
    assert (work.dir / "train.py").read_text() == "LR = 0.01\nSTEPS = 10\n"  # work tree untouched
    assert forge.base_commit() == base

    again = forge.open_candidate(cand.experiment_id, base, {"train.py": "something else\n"}, "x", "y")
    assert again == cand
    assert work.run("branch", "--list", "autoresearch/*").count("autoresearch/") == 1


def test_bad_experiment_id_is_refused(work):
    with pytest.raises(ForgeError, match="branch name"):
        open_one(LocalForge(work.dir), exp_id="bad..id")


def test_merge_fast_forwards_and_updates_worktree(work):
    forge = LocalForge(work.dir)
    cand = open_one(forge)
    merged = forge.merge(cand, "Keep: raise LR")
    assert merged == cand.commit == forge.base_commit()
    assert (work.dir / "train.py").read_text() == NEW_TRAIN
    assert forge.merge(cand, "Keep: raise LR") == merged  # twice = once
    assert forge.notes(cand.commit)[0]["merged"] == merged


def test_merge_makes_a_merge_commit_when_main_moved(work):
    forge = LocalForge(work.dir)
    cand = open_one(forge)
    (work.dir / "ledger.jsonl").write_text('{"id": "earlier"}\n')
    moved = forge.persist(["ledger.jsonl"], "ledger: earlier")
    merged = forge.merge(cand, "Keep: raise LR")
    assert work.parents(merged) == [moved, cand.commit]
    assert forge.base_commit() == merged
    assert (work.dir / "train.py").read_text() == NEW_TRAIN
    assert (work.dir / "ledger.jsonl").read_text() == '{"id": "earlier"}\n'
    (work.dir / "ledger.jsonl").write_text('{"id": "earlier"}\n{"id": "later"}\n')
    forge.persist(["ledger.jsonl"], "ledger: later")
    assert forge.merge(cand, "again") == merged  # recorded: never merged twice


def test_merge_when_main_is_not_checked_out(work):
    work.run("checkout", "-q", "-b", "elsewhere")
    forge = LocalForge(work.dir)
    cand = open_one(forge)
    assert forge.merge(cand, "keep") == work.rev_parse("refs/heads/main") == cand.commit
    assert (work.dir / "train.py").read_text() == "LR = 0.01\nSTEPS = 10\n"  # elsewhere's files


def test_merge_refuses_to_overwrite_uncommitted_changes(work):
    forge = LocalForge(work.dir)
    cand = open_one(forge)
    (work.dir / "train.py").write_text("LR = 123  # my experiment, not committed\n")
    with pytest.raises(ForgeError, match="uncommitted changes"):
        forge.merge(cand, "keep")
    assert (work.dir / "train.py").read_text() == "LR = 123  # my experiment, not committed\n"
    assert forge.base_commit() == cand.base_commit


def test_merge_conflict_is_a_forge_error(work):
    forge = LocalForge(work.dir)
    cand = open_one(forge)
    (work.dir / "train.py").write_text("LR = 0.5\nSTEPS = 10\n")
    work.run("commit", "-q", "-am", "human edit")
    with pytest.raises(ForgeError, match="train.py"):
        forge.merge(cand, "keep")


def test_archive_keeps_the_commit_reachable(work):
    forge = LocalForge(work.dir)
    cand = open_one(forge)
    ref = forge.archive(cand)
    assert ref == ARCHIVE_PREFIX + cand.experiment_id
    assert work.rev_parse(ref) == cand.commit
    assert work.try_rev_parse(f"refs/heads/{cand.branch}") is None
    assert "autoresearch/" not in work.run("branch", "--list")
    work.run("gc", "--prune=now", "--quiet")
    assert forge.read_file(cand.commit, "train.py") == NEW_TRAIN  # survives gc
    assert forge.archive(cand) == ref  # idempotent
    assert open_one(forge) == cand  # re-opening the same id finds the archived candidate
    assert forge.notes(cand.commit)[0]["archived"] == ref


def test_status_and_comment_are_git_notes_replaced_in_place(work):
    forge = LocalForge(work.dir)
    cand = open_one(forge)
    forge.set_status(cand, "pending", "training")
    forge.comment(cand, "## Results\n\nval_bpb 1.23")
    forge.set_status(cand, "success", "val_bpb 1.23 beat\nbaseline 1.25")
    forge.comment(cand, "## Results\n\nval_bpb 1.22 (rerun)")
    headers, comment = forge.notes(cand.commit)
    assert headers["autoresearch/eval"] == "success"
    assert headers["description"] == "val_bpb 1.23 beat baseline 1.25"
    assert headers["experiment"] == cand.experiment_id
    assert comment == "## Results\n\nval_bpb 1.22 (rerun)"
    shown = work.run("notes", "--ref=autoresearch", "show", cand.commit)
    assert shown.count("## Results") == 1
    assert forge.base_commit() == cand.base_commit  # notes never move main


def test_persist_commits_on_main_and_pushes_to_a_bare_remote(tmp_path):
    work = init_repo(tmp_path / "work")
    init_bare_remote(work, tmp_path / "remote.git")
    forge = LocalForge(work.dir, remote="origin", push_backoff=0.01)
    (work.dir / "ledger.jsonl").write_text('{"id": 1}\n')
    (work.dir / "resources.md").write_text("# Learnings\n")
    head = forge.persist(["ledger.jsonl", "resources.md"], "ledger: 1 record")
    remote = Git(tmp_path / "remote.git")
    assert remote.rev_parse("main") == head == forge.base_commit()
    assert remote.show_file(head, "resources.md") == "# Learnings\n"
    assert forge.persist(["ledger.jsonl", "resources.md"], "nothing new") == head


def test_persist_push_rejected_then_accepted(tmp_path):
    work = init_repo(tmp_path / "work")
    init_bare_remote(work, tmp_path / "remote.git")
    forge = LocalForge(work.dir, remote="origin", push_backoff=0.01)
    # Another clone pushes first: its own ledger line and a human's program.md.
    other = clone(tmp_path / "remote.git", tmp_path / "other")
    (other.dir / "ledger.jsonl").write_text('{"id": "other"}\n')
    (other.dir / "program.md").write_text("goal\n")
    other.run("add", "-A")
    other.run("commit", "-q", "-m", "other tick")
    other.run("push", "-q", "origin", "main")
    # Meanwhile this clone merged a candidate and appended its own line.
    cand = open_one(forge)
    forge.merge(cand, "keep")
    (work.dir / "ledger.jsonl").write_text('{"id": "mine"}\n')
    head = forge.persist(["ledger.jsonl"], "ledger: mine")

    remote = Git(tmp_path / "remote.git")
    assert remote.rev_parse("main") == head == forge.base_commit()
    assert remote.show_file(head, "ledger.jsonl") == '{"id": "other"}\n{"id": "mine"}\n'
    assert remote.show_file(head, "train.py") == NEW_TRAIN
    assert remote.show_file(head, "program.md") == "goal\n"
    assert (work.dir / "program.md").read_text() == "goal\n"


def test_persist_loses_a_race_then_lands(tmp_path, monkeypatch):
    """The other clone pushes between our fetch and our push: the push is rejected as
    non-fast-forward, and the retry re-applies the ledger commit on top of theirs."""
    work = init_repo(tmp_path / "work")
    init_bare_remote(work, tmp_path / "remote.git")
    other = clone(tmp_path / "remote.git", tmp_path / "other")
    forge = LocalForge(work.dir, remote="origin", push_backoff=0.01)
    real_push = forge.git.push
    outcomes = []

    def racing_push(remote, *refspecs):
        if not outcomes:
            (other.dir / "ledger.jsonl").write_text('{"id": "other"}\n')
            other.run("commit", "-q", "-am", "other wins the race")
            other.run("push", "-q", "origin", "main")
        try:
            real_push(remote, *refspecs)
            outcomes.append("ok")
        except Exception as e:
            outcomes.append(type(e).__name__)
            raise

    monkeypatch.setattr(forge.git, "push", racing_push)
    (work.dir / "ledger.jsonl").write_text('{"id": "mine"}\n')
    head = forge.persist(["ledger.jsonl"], "ledger: mine")
    assert outcomes == ["PushRejected", "ok"]
    remote = Git(tmp_path / "remote.git")
    assert remote.rev_parse("main") == head
    assert remote.show_file(head, "ledger.jsonl") == '{"id": "other"}\n{"id": "mine"}\n'
