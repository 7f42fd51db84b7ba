"""GitHub's REST API through PyGithub, for the GitHub forge: the client, and one call at a time with
its failure turned into a ForgeError that names the permission or setting to change.

Retries: PyGithub's GithubRetry handles 5xx and rate limits (it sleeps until X-RateLimit-Reset) for
GET/POST/PUT/DELETE. It does not retry PATCH, so the PATCHes we send (close a PR, edit a comment),
which are idempotent, get a bounded retry of their own (retry=True). What is still failing after
that becomes a ForgeError.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TypeVar

import requests
from github import (
    Auth,
    BadCredentialsException,
    Github,
    GithubException,
    GithubRetry,
    RateLimitExceededException,
    UnknownObjectException,
)
from github.Repository import Repository

from autoresearch_ci.forge.base import ForgeError
from autoresearch_ci.retry import retrying

T = TypeVar("T")

TRANSPORT_ERRORS = (
    requests.exceptions.RetryError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)

# What to tell the user when GitHub answers 403 (not a rate limit) to an operation.
HINTS = {
    "repo": "give the token read access to the repository (`contents: read`)",
    "pulls": "give the workflow `pull-requests: write` and enable 'Allow GitHub Actions to create and "
    "approve pull requests' in Settings → Actions → General",
    "issues": "give the job `pull-requests: write` (or `issues: write`): comments and labels on a PR go "
    "through the issues API",
    "labels": "give the job `issues: write`: creating a label (a fresh fork has none, and adding a missing "
    "one to a PR creates it) needs it since 2025, although GitHub's page for it names `pull-requests: "
    "write` too; or create the label once by hand (`gh label create NAME`)",
    "statuses": "give the job `statuses: write` (the commit status `autoresearch/eval`)",
    "actions": "give the job `actions: read` (when the Actions run was created: ids stable across re-runs)",
    "merge": "give the job `contents: write` and `pull-requests: write`; if a branch protection rule or "
    'ruleset requires reviews, let github-actions bypass it or set merge_mode = "auto"',
    "automerge": "enable 'Allow auto-merge' in Settings → General and give the job `pull-requests: write`, "
    'or set merge_mode = "squash"',
    "refs": "give the job `contents: write`",
}


def error_message(e: GithubException) -> str:
    """What GitHub said, its error list included."""
    data = e.data if isinstance(e.data, dict) else {}
    parts = [str(data.get("message") or e.message or "")]
    for err in data.get("errors") or []:
        parts.append(err.get("message", json.dumps(err)) if isinstance(err, dict) else str(err))
    return "; ".join(p for p in parts if p)


def _github_retry(total: int, backoff: float, max_rate_limit_wait: float) -> GithubRetry:
    """5xx and rate limits retried by PyGithub; a rate-limit reset further away than
    max_rate_limit_wait fails at once instead of sleeping the job away."""
    try:
        return GithubRetry(total=total, backoff_factor=backoff, max_rate_limit_wait=int(max_rate_limit_wait))
    except TypeError:  # PyGithub releases before max_rate_limit_wait existed
        return GithubRetry(total=total, backoff_factor=backoff)


def _transient(e: BaseException) -> bool:
    return isinstance(e, TRANSPORT_ERRORS) or (isinstance(e, GithubException) and e.status >= 500)


class GitHubAPI:
    """One repository's REST API: `api(need, method, path, fn)` runs one PyGithub call."""

    def __init__(
        self,
        slug: str,
        token: str,
        api_url: str,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        max_rate_limit_wait: float,
        seconds_between_requests: float | None,
        seconds_between_writes: float | None,
    ):
        self.slug = slug
        self.retries = retries
        self.backoff = backoff
        self.gh = Github(
            auth=Auth.Token(token),
            base_url=api_url.rstrip("/"),
            timeout=int(timeout),
            user_agent="autoresearch-ci",
            retry=_github_retry(retries, backoff, max_rate_limit_wait),
            seconds_between_requests=seconds_between_requests,
            seconds_between_writes=seconds_between_writes,
        )
        self._repo: Repository | None = None

    @property
    def repo(self) -> Repository:
        if self._repo is None:
            self._repo = self("repo", "GET", "", lambda: self.gh.get_repo(self.slug))
        return self._repo

    def call(self, fn: Callable[[], T]) -> T:
        """Run a PyGithub call, turning transport failures into ForgeError; GithubException passes."""
        try:
            return fn()
        except TRANSPORT_ERRORS as e:
            raise ForgeError(f"GitHub API unreachable or failing after {self.retries} retries: {e}") from e

    def __call__(self, need: str, method: str, path: str, fn: Callable[[], T], *, retry: bool = False) -> T:
        """Run one API operation; map failures to ForgeError. retry=True adds our own bounded
        retry on 5xx and transport errors, for idempotent requests GithubRetry does not retry."""
        try:
            for attempt in retrying(self.retries if retry else 0, self.backoff, _transient):
                with attempt:
                    return fn()
        except GithubException as e:
            raise self.error(e, need, method, path) from e
        except TRANSPORT_ERRORS as e:
            raise ForgeError(
                f"{method} {self.path(path)}: GitHub did not answer successfully after "
                f"{self.retries} retries ({type(e).__name__}: {e}); try again later"
            ) from e
        raise AssertionError("unreachable")

    def path(self, path: str) -> str:
        return f"/repos/{self.slug}" + (f"/{path}" if path else "")

    def error(self, e: GithubException, need: str, method: str, path: str) -> ForgeError:
        where = f"{e.status} on {method} {self.path(path)}"
        msg = error_message(e)
        if isinstance(e, BadCredentialsException) or e.status == 401:
            return ForgeError(
                f"{where}: GitHub rejected the token (Bad credentials). Check the GITHUB_TOKEN "
                "secret (expired, revoked or mistyped)"
            )
        if isinstance(e, RateLimitExceededException):
            return ForgeError(
                f"{where}: rate limit exhausted and the reset is further away than we wait; run again later"
            )
        if e.status == 403:
            return ForgeError(f"{where}: {HINTS.get(need, HINTS['refs'])} (GitHub said: {msg})")
        if e.status == 404 and need == "repo":
            return ForgeError(
                f"{where}: repository {self.slug} not found: check github.repo in autoresearch.toml "
                "and that the token can see it"
            )
        if isinstance(e, UnknownObjectException) or e.status == 404:
            return ForgeError(
                f"{where}: not found (GitHub answers 404 also when the token lacks access: "
                f"{HINTS.get(need, HINTS['refs'])})"
            )
        return ForgeError(f"{where}: {msg}")
