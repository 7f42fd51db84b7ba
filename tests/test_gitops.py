"""gitops: commits built off the work tree, diffs, ref moves, and pushes that survive a race."""

from __future__ import annotations

import os

import pytest
from support.gitrepo import clone, init_bare_remote, init_repo

from autoresearch_ci.forge import gitcore as gitops
from autoresearch_ci.forge.git import Git
from autoresearch_ci.forge.gitcore import GitError, MergeConflict


@pytest.fixture
def repo(tmp_path) -> Git:
    return init_repo(tmp_path / "work")


def test_commit_files_touches_neither_worktree_nor_index(repo):
    (repo.dir / "scratch.txt").write_text("user's unstaged file\n")
    (repo.dir / "train.py").write_text("LR = 0.5  # user's uncommitted edit\n")
    repo.run("add", "train.py")  # staged by the user
    head = repo.rev_parse("HEAD")

    c = repo.commit_files(
        head, {"train.py": "LR = 0.02\nSTEPS = 10\n", "new/dir/file.txt": "x\n"}, "msg\n\nbody"
    )

    assert repo.parents(c) == [head]
    assert repo.show_file(c, "train.py") == "LR = 0.02\nSTEPS = 10\n"
    assert repo.show_file(c, "new/dir/file.txt") == "x\n"
    assert repo.message(c).startswith("msg\n\nbody")
    assert repo.rev_parse("HEAD") == head  # no ref moved
    assert (repo.dir / "train.py").read_text() == "LR = 0.5  # user's uncommitted edit\n"
    assert repo.run("diff", "--cached", "--name-only") == "train.py"  # the user's index is intact
    assert not (repo.dir / "new").exists()
    author = repo.run("log", "-1", "--format=%an <%ae>|%cn", c)
    assert author == f"{gitops.BOT_NAME} <{gitops.BOT_EMAIL}>|{gitops.BOT_NAME}"


def test_commit_files_works_without_any_git_identity(repo, monkeypatch, tmp_path):
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "nohome"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    g = Git(repo.dir)
    c = g.commit_files(g.rev_parse("HEAD"), {"a.txt": "a\n"}, "no identity configured")
    assert g.run("log", "-1", "--format=%an", c) == gitops.BOT_NAME


def test_commit_files_deletes_and_keeps_modes(repo):
    (repo.dir / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(repo.dir / "run.sh", 0o755)
    repo.run("add", "run.sh")
    repo.run("commit", "-q", "-m", "exec")
    head = repo.rev_parse("HEAD")
    c = repo.commit_files(head, {"run.sh": "#!/bin/sh\necho hi\n", "ledger.jsonl": None}, "edit")
    assert repo.run("ls-tree", c, "run.sh").split()[0] == "100755"
    assert repo.changed_files(head, c) == ["ledger.jsonl", "run.sh"]


@pytest.mark.parametrize("bad", ["/etc/passwd", "../outside", ".git/config", ""])
def test_commit_files_refuses_paths_outside_the_repo(repo, bad):
    with pytest.raises(GitError, match="refusing"):
        repo.commit_files(repo.rev_parse("HEAD"), {bad: "x"}, "m")


def test_show_file_diff_and_changed_files(repo):
    head = repo.rev_parse("HEAD")
    c = repo.commit_files(head, {"train.py": "LR = 0.02\nSTEPS = 10\n"}, "lr")
    assert repo.show_file(head, "train.py") == "LR = 0.01\nSTEPS = 10\n"
    d = repo.diff(head, c)
    assert "--- a/train.py" in d and "+LR = 0.02" in d and "-LR = 0.01" in d
    assert repo.diff(head, head) == ""
    assert "train.py" in repo.diff(head, c, stat=True)
    assert repo.changed_files(head, c) == ["train.py"]
    with pytest.raises(GitError, match="does not exist"):
        repo.show_file(head, "missing.py")
    with pytest.raises(GitError, match="does not name a commit"):
        repo.rev_parse("no-such-branch")


def test_errors_carry_git_stderr(repo):
    with pytest.raises(GitError) as info:
        repo.run("checkout", "definitely-not-a-branch")
    assert "definitely-not-a-branch" in str(info.value)
    assert info.value.returncode != 0 and info.value.stderr


def test_timeout_is_enforced(repo):
    g = Git(repo.dir, timeout=0.5)
    with pytest.raises(GitError, match="timed out after"):
        g.run("-c", "alias.slow=!sleep 5", "slow")


def test_move_ref_is_atomic_and_refuses_to_clobber(repo):
    head = repo.rev_parse("HEAD")
    repo.update_ref("refs/heads/autoresearch/x", head, gitops.ZERO_OID)
    assert repo.move_ref("refs/heads/autoresearch/x", "refs/autoresearch/archive/x") == head
    assert repo.try_rev_parse("refs/heads/autoresearch/x") is None
    assert repo.rev_parse("refs/autoresearch/archive/x") == head
    other = repo.commit_files(head, {"a": "a"}, "other")
    repo.update_ref("refs/heads/y", other)
    repo.update_ref("refs/heads/z", head)
    with pytest.raises(GitError, match="already exists"):
        repo.move_ref("refs/heads/z", "refs/heads/y")
    with pytest.raises(GitError):  # compare-and-swap: create-only refuses an existing ref
        repo.update_ref("refs/heads/y", head, gitops.ZERO_OID)


def test_commit_paths_commits_only_those_paths(repo):
    (repo.dir / "ledger.jsonl").write_text('{"id": 1}\n')
    (repo.dir / "train.py").write_text("LR = 9\n")
    repo.run("add", "train.py")
    c = repo.commit_paths(["ledger.jsonl"], "ledger: 1 record")
    assert repo.changed_files(f"{c}~1", c) == ["ledger.jsonl"]
    assert repo.run("diff", "--cached", "--name-only") == "train.py"  # still staged, not committed
    assert repo.commit_paths(["ledger.jsonl"], "again") == c  # nothing new: no empty commit


def test_merge_commit_fast_forward_and_true_merge(repo):
    head = repo.rev_parse("HEAD")
    cand = repo.commit_files(head, {"train.py": "LR = 0.02\nSTEPS = 10\n"}, "cand")
    assert repo.merge_commit(head, cand, "m") == cand  # fast-forward
    assert repo.merge_commit(cand, head, "m") == cand  # already contained
    moved = repo.commit_files(head, {"ledger.jsonl": "{}\n"}, "ledger")
    m = repo.merge_commit(moved, cand, "merge cand")
    assert repo.parents(m) == [moved, cand]
    assert repo.show_file(m, "train.py") == "LR = 0.02\nSTEPS = 10\n"
    assert repo.show_file(m, "ledger.jsonl") == "{}\n"


def test_conflicts_raise_unless_union_allowed(repo):
    head = repo.rev_parse("HEAD")
    a = repo.commit_files(head, {"ledger.jsonl": '{"a": 1}\n', "train.py": "LR = 1\n"}, "a")
    b = repo.commit_files(head, {"ledger.jsonl": '{"b": 2}\n', "train.py": "LR = 2\n"}, "b")
    with pytest.raises(MergeConflict) as info:
        repo.merge_commit(a, b, "m", union_paths=["ledger.jsonl"])
    assert info.value.paths == ["train.py"]
    c = repo.commit_files(head, {"ledger.jsonl": '{"b": 2}\n'}, "b only ledger")
    m = repo.merge_commit(a, c, "m", union_paths=["ledger.jsonl"])
    assert repo.show_file(m, "ledger.jsonl") == '{"a": 1}\n{"b": 2}\n'


def test_advance_branch_updates_checked_out_worktree_and_refuses_conflicts(repo):
    head = repo.rev_parse("HEAD")
    cand = repo.commit_files(head, {"train.py": "LR = 0.02\nSTEPS = 10\n"}, "cand")
    (repo.dir / "notes.txt").write_text("untracked, unrelated\n")
    repo.advance_branch("main", cand, head)
    assert (repo.dir / "train.py").read_text() == "LR = 0.02\nSTEPS = 10\n"
    assert (repo.dir / "notes.txt").exists()
    nxt = repo.commit_files(cand, {"train.py": "LR = 0.03\nSTEPS = 10\n"}, "next")
    (repo.dir / "train.py").write_text("LR = 42  # uncommitted\n")
    with pytest.raises(GitError, match="uncommitted changes"):
        repo.advance_branch("main", nxt, cand)
    assert repo.rev_parse("HEAD") == cand
    assert (repo.dir / "train.py").read_text() == "LR = 42  # uncommitted\n"


def test_push_retries_after_non_fast_forward_and_replays_the_commit(tmp_path):
    work = init_repo(tmp_path / "work")
    init_bare_remote(work, tmp_path / "remote.git")
    other = clone(tmp_path / "remote.git", tmp_path / "other")
    # The other party lands first: a ledger line and a program.md edit.
    (other.dir / "ledger.jsonl").write_text('{"id": "theirs"}\n')
    (other.dir / "program.md").write_text("# program\n")
    other.run("add", "-A")
    other.run("commit", "-q", "-m", "theirs")
    other.run("push", "-q", "origin", "main")

    (work.dir / "ledger.jsonl").write_text('{"id": "ours"}\n')
    pushed = work.commit_and_push(
        ["ledger.jsonl"], "ledger: ours", branch="main", remote="origin", backoff=0.01
    )

    remote = Git(tmp_path / "remote.git")
    assert remote.rev_parse("main") == pushed == work.rev_parse("HEAD")
    assert remote.show_file(pushed, "ledger.jsonl") == '{"id": "theirs"}\n{"id": "ours"}\n'
    assert remote.show_file(pushed, "program.md") == "# program\n"
    assert len(remote.parents(pushed)) == 1  # re-applied, not merged: main stays linear
    assert remote.message(pushed).startswith("ledger: ours")
    assert (work.dir / "program.md").read_text() == "# program\n"  # the work tree followed


def test_push_gives_up_after_bounded_attempts(tmp_path, monkeypatch):
    work = init_repo(tmp_path / "work")
    init_bare_remote(work, tmp_path / "remote.git")
    calls = []

    def always_rejected(remote, *refspecs):
        calls.append(refspecs)
        raise gitops.PushRejected("rejected (fetch first)")

    (work.dir / "ledger.jsonl").write_text("x\n")
    work.commit_paths(["ledger.jsonl"], "ledger")
    monkeypatch.setattr(work, "push", always_rejected)
    with pytest.raises(GitError, match="still rejected after 3 attempts"):
        work.push_branch("main", "origin", attempts=3, backoff=0.001)
    assert len(calls) == 3


def test_commit_and_push_when_branch_is_not_checked_out(tmp_path):
    work = init_repo(tmp_path / "work")
    init_bare_remote(work, tmp_path / "remote.git")
    work.run("checkout", "-q", "-b", "feature")
    (work.dir / "ledger.jsonl").write_text('{"id": 1}\n')
    head = work.commit_and_push(["ledger.jsonl"], "ledger", branch="main", remote="origin", backoff=0.01)
    assert Git(tmp_path / "remote.git").show_file(head, "ledger.jsonl") == '{"id": 1}\n'
    assert work.current_branch() == "refs/heads/feature"
    assert work.rev_parse("refs/heads/main") == head


def test_merged_at_finds_the_merge_or_the_fast_forward(repo):
    head = repo.rev_parse("HEAD")
    ff = repo.commit_files(head, {"a": "1"}, "ff")
    repo.advance_branch("main", ff, head)
    after = repo.commit_files(ff, {"b": "1"}, "after")
    repo.advance_branch("main", after, ff)
    assert repo.merged_at(ff, "refs/heads/main") == ff
    side = repo.commit_files(head, {"c": "1"}, "side")
    m = repo.merge_commit(after, side, "merge side")
    repo.advance_branch("main", m, after)
    later = repo.commit_files(m, {"d": "1"}, "later")
    repo.advance_branch("main", later, m)
    assert repo.merged_at(side, "refs/heads/main") == m
    assert repo.merged_at(repo.commit_files(head, {"e": "1"}, "x"), "refs/heads/main") is None


def test_advance_branch_in_a_copied_checkout(repo, tmp_path):
    """A copied (or cache-restored) checkout: every file's stat data in the index is stale, its
    content unchanged. Moving the checked-out branch must not take that for local changes."""
    import shutil

    head = repo.rev_parse("HEAD")
    cand = repo.commit_files(head, {"train.py": "LR = 0.02\nSTEPS = 10\n"}, "cand")
    copy = tmp_path / "copy"
    shutil.copytree(repo.dir, copy, symlinks=True)
    g = Git(copy)
    g.advance_branch("main", cand, head)
    assert (copy / "train.py").read_text() == "LR = 0.02\nSTEPS = 10\n"
    assert g.run("status", "--porcelain") == ""
