"""The forge interface: where candidates live as branches and PRs, and where the ledger is kept.

Two implementations share this shape: `local` (git in the working repository, the embedded default)
and `github` (PyGithub against the GitHub REST API). The loop never knows which one it holds.
Every method is idempotent: calling it twice with the same arguments leaves the same state, so a
tick that died half-way can simply run again.
"""

from __future__ import annotations

from typing import Literal, Protocol

from autoresearch_ci.records import Candidate

StatusState = Literal["pending", "success", "failure", "error"]


class ForgeError(RuntimeError):
    """A forge operation failed in a way a retry will not fix; the message says what to change."""


class Forge(Protocol):
    name: str

    def base_commit(self) -> str:
        """The current head of the base branch (main)."""

    def read_file(self, commit: str, path: str) -> str:
        """A file's text at a commit."""

    def open_candidate(
        self, experiment_id: str, base_commit: str, files: dict[str, str], title: str, body: str
    ) -> Candidate:
        """Create branch `autoresearch/<id>` from base_commit with `files` written in one commit,
        and (where the forge has them) open a PR with the configured labels. Returns the existing
        candidate when called again for the same id."""

    def changed_files(self, base_commit: str, commit: str) -> list[str]:
        """Paths that differ between two commits (added, modified, deleted or renamed)."""

    def diff(self, base_commit: str, commit: str) -> str:
        """The unified diff between two commits."""

    def set_status(self, candidate: Candidate, state: StatusState, description: str) -> None:
        """Commit status `autoresearch/eval` on the candidate commit (no-op where unsupported)."""

    def comment(self, candidate: Candidate, body: str) -> None:
        """The results comment on the candidate's PR (updated in place when it already exists)."""

    def merge(self, candidate: Candidate, message: str) -> str:
        """Merge the candidate into the base branch; returns the resulting base head.
        A candidate already merged returns the same commit again."""

    def archive(self, candidate: Candidate) -> str:
        """Take a discarded candidate off the active branches without losing it; returns the ref
        (or PR URL) where its commit can still be found."""

    def persist(self, paths: list[str], message: str) -> str:
        """Commit bookkeeping files (ledger, resources.md) to the base branch and make them durable
        (push where there is a remote), retrying a rejected non-fast-forward push; returns the commit."""
