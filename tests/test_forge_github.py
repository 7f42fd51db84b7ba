"""GitHubForge against the fake GitHub (REST + auto-merge GraphQL) backed by a real bare repo."""

from __future__ import annotations

import time

import pytest
from support.fake_github import FakeGitHub
from support.gitrepo import clone, init_bare_remote, init_repo

from autoresearch_ci.forge.base import ForgeError
from autoresearch_ci.forge.git import Git
from autoresearch_ci.forge.github import GitHubForge
from autoresearch_ci.report.pr import COMMENT_MARKER as RESULTS_MARKER

NEW_TRAIN = "LR = 0.02\nSTEPS = 10\n"
EXP = "20261122-141503-3f2a9c"


@pytest.fixture
def world(tmp_path):
    """A work tree (the Actions checkout), its bare origin (GitHub's git side) and the fake API."""
    work = init_repo(tmp_path / "work")
    init_bare_remote(work, tmp_path / "origin.git")
    with FakeGitHub(tmp_path / "origin.git", slug="octo/lab", token="s3cret") as fake:
        yield work, fake


def make_forge(work: Git, fake: FakeGitHub, **kw) -> GitHubForge:
    kw.setdefault("token", "s3cret")
    return GitHubForge(
        "octo/lab",
        workdir=work.dir,
        api_url=fake.base_url,
        labels=["autoresearch", "experiment"],
        timeout=10,
        retries=3,
        backoff=0.01,
        seconds_between_requests=None,
        seconds_between_writes=None,
        run_url="https://github.test/octo/lab/actions/runs/1",
        **kw,
    )


def open_one(forge: GitHubForge, exp: str = EXP):
    return forge.open_candidate(
        exp,
        forge.base_commit(),
        {"train.py": NEW_TRAIN},
        "Raise LR to 0.02",
        "Hypothesis: a higher LR converges faster in 300 s.",
    )


def test_open_candidate_pushes_branch_and_opens_labelled_pr(world):
    work, fake = world
    forge = make_forge(work, fake)
    base = forge.base_commit()
    cand = open_one(forge)

    assert cand.branch == f"autoresearch/{EXP}" and cand.pr_number == 1
    assert cand.pr_url == "https://github.test/octo/lab/pull/1"
    assert cand.base_commit == base
    assert fake.branch_sha(cand.branch) == cand.commit
    assert fake.git.show_file(cand.commit, "train.py") == NEW_TRAIN
    pr = fake.pulls[1]
    assert pr["title"] == "Raise LR to 0.02" and pr["base"] == "main"
    assert "Hypothesis: a higher LR" in pr["body"]
    assert "train.py" in pr["body"] and "+LR = 0.02" in pr["body"]  # diff summary
    assert fake.issue_labels[1] == ["autoresearch", "experiment"]
    assert (work.dir / "train.py").read_text() == "LR = 0.01\nSTEPS = 10\n"  # checkout untouched
    assert forge.changed_files(cand.base_commit, cand.commit) == ["train.py"]
    assert "+LR = 0.02" in forge.diff(cand.base_commit, cand.commit)
    assert forge.read_file(cand.commit, "train.py") == NEW_TRAIN

    assert open_one(forge) == cand  # rerun: same candidate, nothing new
    assert fake.count("POST", r"/pulls$") == 1
    assert fake.count("POST", r"/labels$") == 1
    assert len(fake.pulls) == 1


def test_rerun_from_a_fresh_clone_finds_the_existing_pr(world, tmp_path):
    work, fake = world
    cand = open_one(make_forge(work, fake))
    fresh = clone(tmp_path / "origin.git", tmp_path / "fresh")
    again = open_one(make_forge(fresh, fake))
    assert again == cand
    assert fake.count("POST", r"/pulls$") == 1


def test_status_pending_then_success(world):
    work, fake = world
    forge = make_forge(work, fake)
    cand = open_one(forge)
    forge.set_status(cand, "pending", "training on modal (3 runs)")
    assert fake.latest_status(cand.commit)["state"] == "pending"
    forge.set_status(cand, "success", "val_bpb 0.9812 vs baseline 0.9950 ± 0.0012: keep " + "x" * 200)
    status = fake.latest_status(cand.commit)
    assert status["state"] == "success" and status["context"] == "autoresearch/eval"
    assert len(status["description"]) <= 140
    assert status["target_url"] == "https://github.test/octo/lab/actions/runs/1"


def test_results_comment_is_edited_on_rerun(world):
    work, fake = world
    forge = make_forge(work, fake)
    cand = open_one(forge)
    forge.comment(cand, "## Results\nval_bpb 0.99")
    forge.comment(cand, "## Results\nval_bpb 0.98 (rerun)")
    forge.comment(cand, "## Results\nval_bpb 0.98 (rerun)")  # unchanged: no request at all
    bodies = fake.comments_on(1)
    assert len(bodies) == 1
    assert bodies[0].startswith(RESULTS_MARKER) and "0.98 (rerun)" in bodies[0]
    assert fake.count("POST", r"/issues/1/comments$") == 1
    assert fake.count("PATCH", r"/issues/comments/\d+$") == 1


def test_duplicate_results_comments_are_folded_into_one(world):
    work, fake = world
    forge = make_forge(work, fake)
    cand = open_one(forge)
    fake.fail("POST", r"/issues/1/comments$", 502, after=True)  # made, but the client saw 502 and retried
    forge.comment(cand, "first")
    assert len(fake.comments_on(1)) == 2
    forge.comment(cand, "second")
    assert [b.split("\n", 1)[1] for b in fake.comments_on(1)] == ["second\n"]


def test_merge_squash_once(world):
    work, fake = world
    forge = make_forge(work, fake)
    cand = open_one(forge)
    before = fake.branch_sha("main")
    sha = forge.merge(cand, "Keep: raise LR\n\nval_bpb 0.98 vs 0.99")
    assert fake.branch_sha("main") == sha
    assert fake.git.parents(sha) == [before]  # squashed: one parent, main linear
    assert fake.git.show_file(sha, "train.py") == NEW_TRAIN
    assert fake.git.message(sha).startswith("Keep: raise LR (#1)")
    assert fake.pulls[1]["merged"] and fake.pulls[1]["state"] == "closed"
    assert fake.requests("PUT", r"/pulls/1/merge$")[0].body["sha"] == cand.commit  # expected head

    assert forge.merge(cand, "Keep again") == sha  # merged PR: returns its merge commit
    assert fake.count("PUT", r"/merge$") == 1
    assert forge.base_commit() == sha


def test_merge_refuses_an_untested_head(world, tmp_path):
    work, fake = world
    forge = make_forge(work, fake)
    cand = open_one(forge)
    other = clone(tmp_path / "origin.git", tmp_path / "other")
    other.run("checkout", "-q", cand.branch)
    (other.dir / "train.py").write_text("LR = 1000\n")
    other.run("commit", "-q", "-am", "sneaky")
    other.run("push", "-q", "origin", cand.branch)
    with pytest.raises(ForgeError, match="untested head"):
        forge.merge(cand, "keep")
    assert not fake.pulls[1]["merged"]


def test_merge_put_retried_after_success_returns_the_merge(world):
    work, fake = world
    forge = make_forge(work, fake)
    cand = open_one(forge)
    fake.fail("PUT", r"/pulls/1/merge$", 502, after=True)  # merged, but the answer was lost
    sha = forge.merge(cand, "keep")
    assert sha == fake.pulls[1]["merge_commit_sha"] == fake.branch_sha("main")
    assert len(fake.git.run("rev-list", "main").split()) == 2  # initial + exactly one squash


def test_automerge_falls_back_to_merge_on_clean_status(world):
    work, fake = world
    forge = make_forge(work, fake, merge_mode="auto")
    cand = open_one(forge)
    sha = forge.merge(cand, "keep")
    assert fake.count("POST", r"/graphql$") == 1
    assert fake.count("PUT", r"/merge$") == 1
    assert sha == fake.branch_sha("main")


def test_automerge_armed_returns_pending_or_the_merge(world):
    work, fake = world
    fake.automerge = "enable"  # a required check is still pending: GitHub merges later
    forge = make_forge(work, fake, merge_mode="auto")
    cand = open_one(forge)
    assert forge.merge(cand, "keep") == ""
    assert fake.pulls[1]["auto_merge"]["merge_method"] == "squash"
    assert fake.count("PUT", r"/merge$") == 0
    fake.do_merge(fake.pulls[1], "squash")  # the check passed, GitHub merged it
    assert forge.merge(cand, "keep") == fake.branch_sha("main")

    fake.automerge = "not-allowed"
    cand2 = open_one(forge, exp="20261122-150000-aaaaaa")
    with pytest.raises(ForgeError, match="Allow auto-merge"):
        forge.merge(cand2, "keep")


def test_archive_closes_pr_and_deletes_branch(world):
    work, fake = world
    forge = make_forge(work, fake)
    cand = open_one(forge)
    url = forge.archive(cand)
    assert url == cand.pr_url
    assert fake.pulls[1]["state"] == "closed" and not fake.pulls[1]["merged"]
    assert fake.branch_sha(cand.branch) is None
    assert fake.git.has_commit(cand.commit)  # refs/pull/1/head keeps it, like GitHub
    assert forge.archive(cand) == url  # idempotent
    assert fake.count("PATCH", r"/pulls/1$") == 1
    assert open_one(forge) == cand  # the closed PR is still this experiment's candidate
    with pytest.raises(ForgeError, match="closed without merging"):
        forge.merge(cand, "keep")


def test_persist_pushes_ledger_after_remote_merges(world):
    """The judge's case: PRs were merged through the API, so origin/main moved past the checkout."""
    work, fake = world
    forge = make_forge(work, fake)
    cand = open_one(forge)
    merged = forge.merge(cand, "keep")
    (work.dir / "ledger.jsonl").write_text(f'{{"id": "{EXP}"}}\n')
    head = forge.persist(["ledger.jsonl"], "ledger: 1 experiment")
    assert fake.branch_sha("main") == head
    assert fake.git.parents(head) == [merged]
    assert fake.git.show_file(head, "train.py") == NEW_TRAIN
    assert (work.dir / "train.py").read_text() == NEW_TRAIN  # the checkout followed main


def test_502_then_success(world):
    work, fake = world
    forge = make_forge(work, fake)
    cand = open_one(forge)
    fake.fail("POST", r"/statuses/", 502, times=2)
    forge.set_status(cand, "pending", "training")
    assert fake.latest_status(cand.commit)["state"] == "pending"
    assert fake.count("POST", r"/statuses/") == 3
    fake.fail("PATCH", r"/pulls/1$", 502, times=2)  # PATCH: not retried by GithubRetry, by us
    forge.archive(cand)
    assert fake.pulls[1]["state"] == "closed"
    assert fake.count("PATCH", r"/pulls/1$") == 3


def test_5xx_forever_becomes_forge_error(world):
    work, fake = world
    forge = make_forge(work, fake)
    cand = open_one(forge)
    fake.fail("POST", r"/statuses/", 502, times=100)
    with pytest.raises(ForgeError, match="did not answer"):
        forge.set_status(cand, "pending", "training")
    fake.fail("PATCH", r"/pulls/1$", 503, times=100)
    with pytest.raises(ForgeError, match="503"):
        forge.archive(cand)


def test_rate_limit_waits_for_reset_then_succeeds(world):
    work, fake = world
    forge = make_forge(work, fake)
    cand = open_one(forge)
    fake.rate_limit("POST", r"/statuses/", reset_in=1.0)
    t0 = time.monotonic()
    forge.set_status(cand, "success", "keep")
    waited = time.monotonic() - t0
    assert fake.latest_status(cand.commit)["state"] == "success"
    assert [r.status for r in fake.requests("POST", r"/statuses/")] == [403, 201]
    assert waited >= 0.9  # slept until X-RateLimit-Reset (+1 s margin), not a tight loop


def test_pr_created_twice_by_retried_post_uses_the_existing_pr(world):
    work, fake = world
    forge = make_forge(work, fake)
    fake.fail("POST", r"/pulls$", 502, after=True)  # created, answer lost; GithubRetry re-POSTs -> 422
    cand = open_one(forge)
    assert [r.status for r in fake.requests("POST", r"/pulls$")] == [502, 422]
    assert len(fake.pulls) == 1 and cand.pr_number == 1
    assert fake.issue_labels[1] == ["autoresearch", "experiment"]


def test_bad_token_is_a_forge_error(world):
    work, fake = world
    forge = make_forge(work, fake, token="wrong")
    with pytest.raises(ForgeError, match="401.*GITHUB_TOKEN"):
        open_one(forge)


def test_403_on_pr_creation_names_the_permission_and_setting(world):
    work, fake = world
    forge = make_forge(work, fake)
    fake.fail(
        "POST", r"/pulls$", 403, message="GitHub Actions is not permitted to create or approve pull requests."
    )
    with pytest.raises(ForgeError) as info:
        open_one(forge)
    msg = str(info.value)
    assert "403 on POST /repos/octo/lab/pulls" in msg
    assert "pull-requests: write" in msg and "Allow GitHub Actions to create and approve pull requests" in msg
    assert fake.count("POST", r"/pulls$") == 1  # a plain 403 is not retried


def test_403_on_status_names_statuses_write(world):
    work, fake = world
    forge = make_forge(work, fake)
    cand = open_one(forge)
    fake.fail("POST", r"/statuses/", 403, message="Resource not accessible by integration")
    with pytest.raises(ForgeError, match="statuses: write"):
        forge.set_status(cand, "pending", "x")


def test_404_repo_names_the_config_key(world):
    work, fake = world
    forge = GitHubForge(
        "octo/missing",
        "s3cret",
        work.dir,
        api_url=fake.base_url,
        retries=0,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )
    with pytest.raises(
        ForgeError, match="check github.repo in autoresearch.toml and that the token can see it"
    ):
        forge.open_candidate(EXP, work.rev_parse("HEAD"), {"train.py": NEW_TRAIN}, "t", "b")


def test_constructor_validates_and_sends_nothing(world):
    work, fake = world
    with pytest.raises(ForgeError, match="owner/name"):
        GitHubForge("nope", "t", work.dir)
    with pytest.raises(ForgeError, match="GITHUB_TOKEN"):
        GitHubForge("o/r", "", work.dir)
    make_forge(work, fake)
    assert fake.log == []
