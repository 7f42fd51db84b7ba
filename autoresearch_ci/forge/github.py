"""The GitHub forge: candidates as branches with pull requests, the ledger on main.

Two channels, each for what it does best:
- git (forge/git.py) pushes the candidate branch (one commit built off the work tree) and persists the
  bookkeeping files on main, re-applying them when the push loses a race with a merge;
- PyGithub does the rest: the PR (hypothesis, diff summary, labels), the commit status
  `autoresearch/eval`, the results comment (one per PR, found again by a hidden marker and edited),
  the merge (squash with the expected head sha, or GitHub auto-merge), and close + delete branch.

Every operation is idempotent so a tick can be re-run: an existing PR is found by its head before
one is created (and a 422 "already exists" after a retried POST is answered by fetching it), a
merged PR returns its merge commit, a deleted branch stays deleted. The API calls, their retries
and the errors that name the permission or setting to change are in github_api.py.

The class is in three parts, one module each: this one (the PR, its labels, notes, comments and
commit status), github_git.py (the git channel: fetch, the candidate branch, the ledger on main)
and github_merge.py (how a verdict lands: squash merge or auto-merge, close and delete the branch).

What each call needs of GITHUB_TOKEN (and so which job has which `permissions:` in
.github/workflows/autoresearch.yml): pushing a branch or the ledger, reading commits and merging:
`contents`; opening, listing, closing PRs: `pull-requests`; comments: `pull-requests` (or `issues`);
adding a label the repository does not have yet creates it, which since 2025 needs `issues: write`
(GitHub's page still says `pull-requests: write` is enough; the workflow grants both); the commit
status: `statuses: write`; when the Actions run was created (stable ids across re-runs): `actions:
read`. tests/support/fake_github.py enforces the same table, with GitHub's documentation per row.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from github import GithubException, UnknownObjectException
from github.PullRequest import PullRequest
from github.Repository import Repository

from autoresearch_ci.forge.base import (
    BRANCH_PREFIX,
    STATUS_CONTEXT,
    STATUS_DESCRIPTION_LIMIT,
    ForgeError,
    StatusState,
    candidate_message,
)
from autoresearch_ci.forge.git import Git
from autoresearch_ci.forge.gitcore import GIT_TIMEOUT_S, PUSH_ATTEMPTS
from autoresearch_ci.forge.github_api import GitHubAPI
from autoresearch_ci.forge.github_git import GitHubGit
from autoresearch_ci.forge.github_merge import GitHubMerge
from autoresearch_ci.records import Candidate
from autoresearch_ci.report.pr import COMMENT_MARKER, github_body

NOTE_MARKER = "<!-- autoresearch-ci:note {key} -->"
LABEL_COLOR = "0e8a16"
LABEL_DESCRIPTION = "An experiment proposed and judged by autoresearch-ci"


class GitHubForge(GitHubGit, GitHubMerge):
    name = "github"

    def __init__(
        self,
        repo_slug: str,
        token: str,
        workdir: str | os.PathLike,
        api_url: str = "https://api.github.com",
        base_branch: str = "main",
        labels: list[str] | tuple[str, ...] = ("autoresearch",),
        merge_mode: Literal["squash", "auto"] = "squash",
        remote: str = "origin",
        timeout: float = 30.0,
        retries: int = 5,
        *,
        backoff: float = 1.0,
        max_rate_limit_wait: float = 900.0,
        seconds_between_requests: float | None = 0.25,
        seconds_between_writes: float | None = 1.0,
        run_url: str | None = None,
        push_attempts: int = PUSH_ATTEMPTS,
        automerge_wait: float = 0.0,
    ):
        if "/" not in repo_slug:
            raise ForgeError(f"github.repo must be owner/name, not {repo_slug!r}")
        if merge_mode not in ("squash", "auto"):
            raise ForgeError(f"merge_mode must be 'squash' or 'auto', not {merge_mode!r}")
        if not token:
            raise ForgeError(
                "no GitHub token: set GITHUB_TOKEN (in a workflow: `env: GITHUB_TOKEN: ${{ github.token }}`)"
            )
        self.slug = repo_slug
        self.owner = repo_slug.split("/")[0]
        self.base_branch = base_branch
        self.labels = list(labels)
        self.merge_mode = merge_mode
        self.remote = remote
        self.retries = retries
        self.backoff = backoff
        self.push_attempts = push_attempts
        self.automerge_wait = automerge_wait
        self.run_url = run_url
        self.git = Git(workdir, timeout=max(GIT_TIMEOUT_S, timeout))
        self._token = token
        self._git_auth_checked = False
        self._labels_ready = False
        self._api = GitHubAPI(
            repo_slug,
            token,
            api_url,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_rate_limit_wait=max_rate_limit_wait,
            seconds_between_requests=seconds_between_requests,
            seconds_between_writes=seconds_between_writes,
        )

    # ------------------------------------------------------------------------------ candidates

    def open_candidate(
        self,
        experiment_id: str,
        base_commit: str,
        files: dict[str, str],
        title: str,
        body: str,
        meta: Mapping | None = None,
    ) -> Candidate:
        branch = BRANCH_PREFIX + experiment_id
        pr = self._find_pr(branch)
        if pr is None:
            message = candidate_message(title, body, experiment_id, meta)
            commit = self._push_candidate_branch(branch, base_commit, files, message)
            stat, diff = self.git.diff(base_commit, commit, stat=True), self.git.diff(base_commit, commit)
            pr_body = github_body(experiment_id, body, base_commit, commit, stat, diff)
            try:
                pr = self._api(
                    "pulls",
                    "POST",
                    "pulls",
                    lambda: self.repo.create_pull(
                        base=self.base_branch, head=branch, title=title[:250], body=pr_body
                    ),
                )
            except ForgeError as e:
                if "already exists" not in str(e):
                    raise
                # A POST retried after a gateway error, or a concurrent run: the PR is there.
                pr = self._find_pr(branch)
                if pr is None:
                    raise
        have = {label.name for label in pr.labels}
        missing = [name for name in self.labels if name not in have]
        if missing:
            self._ensure_labels()
            self._api("issues", "POST", f"issues/{pr.number}/labels", lambda: pr.add_to_labels(*missing))
        return self._candidate(pr, experiment_id, base_commit)

    def _candidate(self, pr: PullRequest, experiment_id: str, base_commit: str | None = None) -> Candidate:
        commit = pr.head.sha
        self._have(commit, fetch_ref=f"refs/pull/{pr.number}/head")
        parents = self.git.parents(commit) if self.git.has_commit(commit) else []
        return Candidate(
            experiment_id=experiment_id,
            branch=BRANCH_PREFIX + experiment_id,
            base_commit=parents[0] if parents else (base_commit or commit),
            commit=commit,
            pr_number=pr.number,
            pr_url=pr.html_url,
        )

    def find_candidate(self, experiment_id: str) -> Candidate | None:
        pr = self._find_pr(BRANCH_PREFIX + experiment_id)
        return None if pr is None else self._candidate(pr, experiment_id)

    def open_candidates(self) -> list[Candidate]:
        pulls = self._api(
            "pulls",
            "GET",
            "pulls",
            lambda: list(self.repo.get_pulls(state="open", base=self.base_branch)),
        )
        # Only this repository's own branches: anyone can open a PR from a fork with a branch named
        # autoresearch/..., and settle would otherwise train (and could merge) what it holds.
        return [
            self._candidate(p, p.head.ref.removeprefix(BRANCH_PREFIX))
            for p in sorted(pulls, key=lambda p: p.number)
            if p.head.ref.startswith(BRANCH_PREFIX)
            and p.head.repo is not None
            and p.head.repo.full_name == self.slug
        ]

    def note(self, candidate: Candidate, key: str, text: str) -> None:
        """A comment of its own per key (the results comment is another), posted once."""
        pr = self._pr(candidate)
        marker = NOTE_MARKER.format(key=key)
        if key in self.note_keys(candidate, key):
            return
        body = f"{marker}\n{text.strip()}\n"
        self._api("issues", "POST", f"issues/{pr.number}/comments", lambda: pr.create_issue_comment(body))

    def note_keys(self, candidate: Candidate, prefix: str) -> list[str]:
        pr = self._pr(candidate)
        head = NOTE_MARKER.split("{key}")[0]
        bodies = self._api(
            "issues",
            "GET",
            f"issues/{pr.number}/comments",
            lambda: [c.body or "" for c in pr.get_issue_comments()],
        )
        keys = []
        for b in bodies:
            first = b.split("\n", 1)[0]
            if first.startswith(head) and first.endswith(" -->"):
                key = first[len(head) : -len(" -->")]
                if key.startswith(prefix) and key not in keys:
                    keys.append(key)
        return keys

    def run_created_at(self, run_id: str) -> datetime | None:
        run = self._api(
            "actions", "GET", f"actions/runs/{run_id}", lambda: self.repo.get_workflow_run(int(run_id))
        )
        return run.created_at

    def _ensure_labels(self) -> None:
        """Create the configured labels the repository lacks (a fresh fork has none), once, with a
        colour and a description: adding a missing label to a PR would create it anyway, bare, and
        needs the same permission (`issues: write`)."""
        if self._labels_ready:
            return
        for name in self.labels:
            try:
                self._api.call(lambda name=name: self.repo.get_label(name))
            except UnknownObjectException:
                try:
                    self._api.call(
                        lambda name=name: self.repo.create_label(name, LABEL_COLOR, LABEL_DESCRIPTION)
                    )
                except GithubException as e:
                    if e.status == 422 and "already_exists" in str(e.data):
                        continue  # created meanwhile by a concurrent run
                    raise self._api.error(e, "labels", "POST", "labels") from e
            except GithubException as e:
                raise self._api.error(e, "labels", "GET", f"labels/{name}") from e
        self._labels_ready = True

    def set_status(self, candidate: Candidate, state: StatusState, description: str) -> None:
        desc = " ".join(description.split())
        if len(desc) > STATUS_DESCRIPTION_LIMIT:
            desc = desc[: STATUS_DESCRIPTION_LIMIT - 1] + "…"
        kwargs = {"state": state, "description": desc, "context": STATUS_CONTEXT}
        if self.run_url:
            kwargs["target_url"] = self.run_url
        self._api(
            "statuses",
            "POST",
            f"statuses/{candidate.commit}",
            lambda: self.repo.get_commit(candidate.commit).create_status(**kwargs),
        )

    def comment(self, candidate: Candidate, body: str) -> None:
        pr = self._pr(candidate)
        # One marker per comment: a body rendered by report.pr already starts with it.
        body = body.strip().removeprefix(COMMENT_MARKER).lstrip("\n")
        text = f"{COMMENT_MARKER}\n{body}\n"
        ours = self._api(
            "issues",
            "GET",
            f"issues/{pr.number}/comments",
            lambda: [c for c in pr.get_issue_comments() if COMMENT_MARKER in (c.body or "")],
        )
        if not ours:
            self._api("issues", "POST", f"issues/{pr.number}/comments", lambda: pr.create_issue_comment(text))
            return
        first, *extra = ours
        if first.body != text:
            self._api("issues", "PATCH", f"issues/comments/{first.id}", lambda: first.edit(text), retry=True)
        for dup in extra:  # left by a POST that was retried after the server had already made it
            self._api("issues", "DELETE", f"issues/comments/{dup.id}", dup.delete)

    # -------------------------------------------------------------------------------- helpers

    @property
    def repo(self) -> Repository:
        return self._api.repo

    def _find_pr(self, branch: str) -> PullRequest | None:
        pulls = self._api(
            "pulls",
            "GET",
            "pulls",
            lambda: list(
                self.repo.get_pulls(state="all", head=f"{self.owner}:{branch}", base=self.base_branch)
            ),
        )
        if not pulls:
            return None
        return next((p for p in pulls if p.state == "open"), None) or max(pulls, key=lambda p: p.number)

    def _pr(self, candidate: Candidate) -> PullRequest:
        if candidate.pr_number is None:
            pr = self._find_pr(candidate.branch)
            if pr is None:
                raise ForgeError(f"no pull request for {candidate.branch} in {self.slug}")
            return pr
        return self._api(
            "pulls", "GET", f"pulls/{candidate.pr_number}", lambda: self.repo.get_pull(candidate.pr_number)
        )
