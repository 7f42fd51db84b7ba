"""How a verdict lands on GitHub: a keep is squash-merged at the head sha that was evaluated (or
handed to GitHub auto-merge, merge_mode "auto"), anything else is closed and its branch deleted.
Each is idempotent: a merged PR returns its merge commit, a PUT retried after the merge went through
is recognised, a deleted branch stays deleted. A mixin of GitHubForge (github.py), which sets the
attributes below and finds the pull request (`_pr`).
"""

from __future__ import annotations

import time

from github import GithubException, UnknownObjectException
from github.PullRequest import PullRequest
from github.Repository import Repository

from autoresearch_ci.forge.base import ForgeError
from autoresearch_ci.forge.github_api import HINTS, GitHubAPI, error_message
from autoresearch_ci.records import Candidate


class GitHubMerge:
    base_branch: str
    merge_mode: str
    automerge_wait: float
    repo: Repository
    _api: GitHubAPI

    def merge(self, candidate: Candidate, message: str) -> str:
        pr = self._pr(candidate)
        if pr.merged:
            return pr.merge_commit_sha
        if pr.state == "closed":
            raise ForgeError(
                f"PR #{pr.number} ({pr.html_url}) was closed without merging; reopen it to merge"
            )
        title, _, rest = message.strip().partition("\n")
        title = f"{title.strip() or pr.title} (#{pr.number})"
        rest = rest.strip()
        if self.merge_mode == "auto" and self._enable_automerge(pr, candidate, title, rest):
            return self._wait_for_automerge(pr.number)
        try:
            status = self._api.call(
                lambda: pr.merge(
                    merge_method="squash", sha=candidate.commit, commit_title=title, commit_message=rest
                )
            )
        except GithubException as e:
            fresh = self._api("pulls", "GET", f"pulls/{pr.number}", lambda: self.repo.get_pull(pr.number))
            if fresh.merged:  # a PUT retried after the merge had gone through
                return fresh.merge_commit_sha
            if e.status == 409:
                raise ForgeError(
                    f"PR #{pr.number}: the branch moved since {candidate.commit[:12]} was evaluated; "
                    "not merging an untested head"
                ) from e
            if e.status == 405:
                raise ForgeError(
                    f"PR #{pr.number} is not mergeable ({error_message(e)}): a conflict with "
                    f"{self.base_branch}, or a branch protection rule blocks the bot; " + HINTS["merge"]
                ) from e
            raise self._api.error(e, "merge", "PUT", f"pulls/{pr.number}/merge") from e
        return status.sha

    def archive(self, candidate: Candidate) -> str:
        pr = self._pr(candidate)
        if pr.merged:
            raise ForgeError(f"PR #{pr.number} is merged; a merged candidate cannot be archived")
        if pr.state == "open":
            self._api("pulls", "PATCH", f"pulls/{pr.number}", lambda: pr.edit(state="closed"), retry=True)
        self._delete_branch(candidate.branch)
        return pr.html_url

    def _enable_automerge(self, pr: PullRequest, candidate: Candidate, title: str, rest: str) -> bool:
        """True when auto-merge is armed; False when GitHub says the PR can be merged right now
        ("clean status"), so the caller merges it directly."""
        kwargs = {"commit_body": rest} if rest else {}
        try:
            self._api.call(
                lambda: pr.enable_automerge(
                    merge_method="SQUASH", expected_head_oid=candidate.commit, commit_headline=title, **kwargs
                )
            )
            return True
        except GithubException as e:
            if "clean status" in error_message(e).lower():
                return False
            raise ForgeError(
                f"enabling auto-merge on PR #{pr.number} failed ({error_message(e)}): " + HINTS["automerge"]
            ) from e

    def _wait_for_automerge(self, number: int) -> str:
        """The merge commit once GitHub has merged the PR; "" while auto-merge is still pending
        (required checks not finished after `automerge_wait` seconds)."""
        deadline = time.monotonic() + self.automerge_wait
        while True:
            pr = self._api("pulls", "GET", f"pulls/{number}", lambda: self.repo.get_pull(number))
            if pr.merged:
                return pr.merge_commit_sha
            if time.monotonic() >= deadline:
                return ""
            time.sleep(min(10.0, max(0.1, self.automerge_wait / 10)))

    def _delete_branch(self, branch: str) -> None:
        try:
            ref = self._api.call(lambda: self.repo.get_git_ref(f"heads/{branch}"))
        except UnknownObjectException:
            return  # already gone
        except GithubException as e:
            raise self._api.error(e, "refs", "GET", f"git/ref/heads/{branch}") from e
        try:
            self._api.call(ref.delete)
        except GithubException as e:
            if e.status == 422 and "does not exist" in error_message(e).lower():
                return
            raise self._api.error(e, "refs", "DELETE", f"git/refs/heads/{branch}") from e
