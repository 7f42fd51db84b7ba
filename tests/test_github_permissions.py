"""GitHub's token rules, as the fake enforces them, and the forge under the workflow's permissions.

The fake's ROUTES table names, for each endpoint the code uses, the scope GitHub's documentation
asks of an installation token (GITHUB_TOKEN is one) and the page that says so. These tests pin the
table's shape and its answers, then drive the GitHub forge with each job's own permissions (read from
.github/workflows/autoresearch.yml) to show every call it makes is allowed where it is made, and
that a missing permission fails with the name of the permission to add.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import requests
from support.actions import job_permissions, load
from support.fake_github import ACTIONS_MAY_NOT_OPEN_PRS, LABEL_CREATION, NOT_ACCESSIBLE, FakeGitHub
from support.gitrepo import init_bare_remote, init_repo

from autoresearch_ci.forge.base import ForgeError
from autoresearch_ci.forge.github import GitHubForge

WORKFLOW = load()
EXP = "20261122-141503-3f2a9c"


@pytest.fixture
def world(tmp_path):
    work = init_repo(tmp_path / "work")
    init_bare_remote(work, tmp_path / "origin.git")
    with FakeGitHub(
        tmp_path / "origin.git", slug="octo/lab", token=None, labels=(), enforce_git=True
    ) as fake:
        yield work, fake


def forge(work, fake, permissions: dict, name: str = "job") -> GitHubForge:
    token = fake.add_token(f"ghs_{name}", permissions)
    f = GitHubForge(
        "octo/lab",
        token,
        workdir=work.dir,
        api_url=fake.base_url,
        retries=0,
        backoff=0.01,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )
    f.git.env["GITHUB_TOKEN"] = token  # git pushes as the job
    return f


def open_one(f: GitHubForge):
    return f.open_candidate(EXP, f.base_commit(), {"train.py": "LR = 0.02\nSTEPS = 10\n"}, "Raise LR", "why")


def get(fake, token, path, method="GET", **kw):
    return requests.request(method, f"{fake.repo_url}{path}", headers={"Authorization": f"token {token}"},
                            timeout=10, **kw)  # fmt: skip


def test_every_route_cites_githubs_documentation(world):
    _, fake = world
    rows = fake._routes()
    assert len(rows) >= 30
    for method, pattern, _, n in rows:
        assert n.doc.startswith(
            ("https://docs.github.com/en/rest/", "https://docs.github.com/en/graphql/")
        ), pattern
        for _scope, level in n.any_of:
            assert level in ("read", "write"), (method, pattern)
    by = {(m, p): n for m, p, _, n in rows}
    assert by[("POST", r"/statuses/([0-9a-f]{40})")].any_of == (("statuses", "write"),)
    assert by[("POST", r"/pulls")].any_of == (("pull-requests", "write"),)
    assert by[("PUT", r"/pulls/(\d+)/merge")].any_of == (("contents", "write"),)
    assert by[("POST", r"/issues/(\d+)/labels")].any_of == (("issues", "write"), ("pull-requests", "write"))
    assert by[("POST", r"/labels")] is LABEL_CREATION and LABEL_CREATION.any_of == (("issues", "write"),)
    assert "since 2025" in LABEL_CREATION.note
    assert by[("GET", r"/actions/runs/(\d+)")].any_of == (("actions", "read"),)
    assert by[("GET", r"/actions/permissions/workflow")].any_of == (("administration", "read"),)


def test_a_missing_scope_is_githubs_403(world):
    _, fake = world
    fake.add_token("reader", {"contents": "read"})
    sha = fake.branch_sha("main")
    r = get(fake, "reader", f"/statuses/{sha}", "POST", json={"state": "success", "context": "x"})
    assert r.status_code == 403 and r.json()["message"] == NOT_ACCESSIBLE
    assert r.headers["X-Accepted-GitHub-Permissions"] == "statuses=write"
    assert r.json()["documentation_url"].endswith("#create-a-commit-status")
    assert get(fake, "reader", f"/commits/{sha}").status_code == 200
    assert get(fake, "nobody", "").status_code == 401
    # What no `permissions:` scope gives GITHUB_TOKEN: the Actions settings and the secrets.
    fake.add_token("everything", {s: "write" for s in ("contents", "pull-requests", "issues", "actions")})
    assert get(fake, "everything", "/actions/permissions/workflow").status_code == 403
    assert get(fake, "everything", "/actions/secrets").status_code == 403
    fake.add_token("owner", {}, admin=True, actions=False)
    assert (
        get(fake, "owner", "/actions/permissions/workflow").json()["can_approve_pull_request_reviews"] is True
    )


def test_git_pushes_need_contents_write_and_respect_rulesets(world, tmp_path):
    work, fake = world
    (work.dir / "x.txt").write_text("x")
    work.run("add", "-A")
    work.run("commit", "-qm", "x")

    def push(token):
        env = {**os.environ, "GITHUB_TOKEN": token}
        return subprocess.run(["git", "-C", str(work.dir), "push", "origin", "main"], env=env,
                              capture_output=True, text=True)  # fmt: skip

    fake.add_token("reader", {"contents": "read"})
    p = push("reader")
    assert p.returncode != 0 and "Permission to octo/lab.git denied to github-actions[bot]" in p.stderr
    fake.add_token("writer", {"contents": "write"})
    rid = fake.add_ruleset(["pull_request"], name="main rules")
    p = push("writer")
    assert p.returncode != 0 and "GH013" in p.stderr and "pull_request" in p.stderr
    fake.rulesets[0]["bypass_actions"] = True
    fake.add_ruleset([], name="noop")  # rewrites the state the hook reads
    assert push("writer").returncode == 0 and rid == 100


def test_the_propose_jobs_permissions_cover_everything_it_does_on_a_fresh_fork(world):
    """A fresh fork has no label: adding it to the PR creates it. And propose sets a status."""
    work, fake = world
    f = forge(work, fake, job_permissions(WORKFLOW, "propose"), "propose")
    cand = open_one(f)
    f.set_status(cand, "pending", "queued")
    assert fake.labels == {"autoresearch": fake.labels["autoresearch"]}
    assert fake.issue_labels[cand.pr_number] == ["autoresearch"]
    assert fake.latest_status(cand.commit)["state"] == "pending"
    assert f.run_created_at("77") is not None  # actions: read
    assert f.find_candidate(EXP) == cand and f.open_candidates() == [cand]
    f.note(cand, "retrain t1", "again")
    f.note(cand, "retrain t1", "again")  # once per key
    assert f.note_keys(cand, "retrain ") == ["retrain t1"]


def test_without_statuses_write_propose_fails_saying_so(world):
    """The permission set the workflow had before: contents and pull-requests only."""
    work, fake = world
    f = forge(work, fake, {"contents": "write", "pull-requests": "write", "issues": "write"})
    cand = open_one(f)
    with pytest.raises(ForgeError, match=r"403 on POST .*/statuses/.*statuses: write"):
        f.set_status(cand, "pending", "queued")


def test_creating_the_label_names_issues_write(world):
    """pull-requests: write opens the PR but cannot create the label (GitHub's rule since 2025)."""
    work, fake = world
    f = forge(work, fake, {"contents": "write", "pull-requests": "write", "statuses": "write"})
    with pytest.raises(ForgeError, match=r"issues: write") as e:
        open_one(f)
    assert "gh label create" in str(e.value)
    fake.labels["autoresearch"] = {"color": "ededed", "description": ""}  # created by hand: then it works
    assert open_one(f).pr_number == 1


def test_without_the_actions_setting_the_pr_is_refused_with_githubs_words(world):
    work, fake = world
    fake.actions_settings["can_approve_pull_request_reviews"] = False
    f = forge(work, fake, job_permissions(WORKFLOW, "propose"))
    with pytest.raises(ForgeError) as e:
        open_one(f)
    assert ACTIONS_MAY_NOT_OPEN_PRS in str(e.value) and "Allow GitHub Actions to create" in str(e.value)


def test_the_judge_jobs_permissions_cover_merge_comment_status_and_ledger(world):
    work, fake = world
    cand = open_one(forge(work, fake, job_permissions(WORKFLOW, "propose"), "propose"))
    j = forge(work, fake, job_permissions(WORKFLOW, "judge"), "judge")
    j.comment(cand, "results")
    j.set_status(cand, "success", "keep")
    merged = j.merge(cand, "autoresearch: Raise LR")
    assert fake.pulls[1]["merged"] and merged == fake.pulls[1]["merge_commit_sha"]
    (work.dir / "ledger.jsonl").write_text('{"id": "x"}\n')
    j.persist(["ledger.jsonl"], "ledger")
    assert fake.git.show_file("main", "ledger.jsonl") == '{"id": "x"}\n'


def test_the_train_jobs_token_can_do_nothing_that_writes(world):
    work, fake = world
    f = forge(work, fake, job_permissions(WORKFLOW, "train-modal"), "train")
    with pytest.raises(ForgeError, match="403"):
        open_one(f)


def test_a_pr_from_a_fork_with_a_candidate_branch_name_is_not_a_candidate(world):
    """Anyone may open a PR from a fork's branch named autoresearch/...: settle must not train it."""
    work, fake = world
    f = forge(work, fake, job_permissions(WORKFLOW, "propose"), "propose")
    cand = open_one(f)
    fake.pulls[2] = {
        **fake.pulls[1],
        "number": 2,
        "head": "autoresearch/20261122-000000-evil00",
        "from_fork": "mallory/lab",
    }
    fake.git.update_ref("refs/pull/2/head", cand.commit)
    assert [c.experiment_id for c in f.open_candidates()] == [EXP]
