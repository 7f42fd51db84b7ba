"""The forge interface: where candidates live as branches and PRs, and where the ledger is kept.

Two implementations share this shape: `local` (git in the working repository, the embedded default)
and `github` (PyGithub against the GitHub REST API). The loop never knows which one it holds.
Every method is idempotent: calling it twice with the same arguments leaves the same state, so a
tick that died half-way can simply run again.

A step never touches a path of the repository: the forge gives it a throwaway checkout of a commit
(`worktree`, where the guard command runs) and the text of a bookkeeping file (`working_text`), and
takes files back (`write_files`, then `persist` commits and pushes them). Both forges hold a git
checkout of the base branch for this; `GitCheckout` is what they share about it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol, TypeVar

from autoresearch_ci.forge.git import Git
from autoresearch_ci.forge.gitcore import GitError
from autoresearch_ci.records import Candidate

T = TypeVar("T")

StatusState = Literal["pending", "success", "failure", "error"]

BRANCH_PREFIX = "autoresearch/"  # a candidate is branch autoresearch/<experiment id>
STATUS_CONTEXT = "autoresearch/eval"  # the commit status the judge sets (a required check, if you like)
STATUS_DESCRIPTION_LIMIT = 140  # GitHub keeps this many characters of a status description


class ForgeError(RuntimeError):
    """A forge operation failed in a way a retry will not fix; the message says what to change."""


META_TRAILER = "Autoresearch-Meta: "


def candidate_message(title: str, body: str, experiment_id: str, meta: Mapping | None = None) -> str:
    """The commit message of a candidate: the PR's title and body, and the experiment as a trailer.
    `meta` (the tick, the Actions run, the proposer and what its tokens cost) goes in one more
    trailer line, so a later tick can pick the candidate up from its commit alone (steps/settle.py)."""
    trailers = f"Experiment: {experiment_id}\n"
    if meta:
        trailers += META_TRAILER + json.dumps(dict(meta), sort_keys=True, separators=(",", ":")) + "\n"
    return f"{title.strip()}\n\n{body.strip()}\n\n{trailers}"


def candidate_meta(message: str) -> dict:
    """The Autoresearch-Meta trailer of a candidate's commit message ({} where there is none)."""
    for line in reversed(message.splitlines()):
        if line.startswith(META_TRAILER):
            try:
                data = json.loads(line[len(META_TRAILER) :])
            except ValueError:
                return {}
            return data if isinstance(data, dict) else {}
    return {}


class Forge(Protocol):
    name: str

    def base_commit(self) -> str:
        """The current head of the base branch (main)."""

    def read_file(self, commit: str, path: str) -> str:
        """A file's text at a commit."""

    def open_candidate(
        self,
        experiment_id: str,
        base_commit: str,
        files: dict[str, str],
        title: str,
        body: str,
        meta: Mapping | None = None,
    ) -> Candidate:
        """Create branch `autoresearch/<id>` from base_commit with `files` written in one commit
        (`meta` in its message, see candidate_message), and (where the forge has them) open a PR
        with the configured labels. Returns the existing candidate when called again for the same id."""

    def find_candidate(self, experiment_id: str) -> Candidate | None:
        """The candidate of this experiment if it was ever opened (open, merged or archived)."""

    def open_candidates(self) -> list[Candidate]:
        """Every candidate still open (a PR not yet merged or closed; a branch not yet archived)."""

    def message(self, commit: str) -> str:
        """A commit's message."""

    def note(self, candidate: Candidate, key: str, text: str) -> None:
        """A note on the candidate under `key` (a PR comment on GitHub), written once per key."""

    def note_keys(self, candidate: Candidate, prefix: str) -> list[str]:
        """The keys of the candidate's notes that start with `prefix`."""

    def run_created_at(self, run_id: str) -> datetime | None:
        """When the CI run `run_id` was created (the same for every attempt of it); None where the
        forge has no CI runs."""

    def changed_files(self, base_commit: str, commit: str) -> list[str]:
        """Paths that differ between two commits (added, modified, deleted or renamed)."""

    def diff(self, base_commit: str, commit: str) -> str:
        """The unified diff between two commits."""

    def worktree(self, commit: str) -> AbstractContextManager[Path]:
        """A throwaway checkout of a commit, removed when the context ends."""

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

    def working_text(self, path: str) -> str | None:
        """A bookkeeping file (resources.md) as the forge's checkout holds it now; None when absent."""

    def write_files(self, files: Mapping[str, str]) -> None:
        """Put bookkeeping files (path -> full text) into the forge's checkout, each atomically."""

    def persist(self, paths: list[str], message: str) -> str:
        """Commit bookkeeping files (ledger, resources.md) to the base branch and make them durable
        (push where there is a remote), retrying a rejected non-fast-forward push; returns the commit."""


class GitCheckout:
    """What both forges do the same way with their git checkout (`self.git`). A git failure becomes
    a ForgeError through `_git_error`, which a forge may enrich with hints; `_have` makes sure the
    checkout holds some commits before they are read (a no-op where it always does)."""

    git: Git

    def _git_error(self, e: GitError) -> ForgeError:
        return ForgeError(str(e))

    def _git(self, fn: Callable[..., T], *args, **kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except GitError as e:
            raise self._git_error(e) from e

    def _have(self, *shas: str, fetch_ref: str | None = None) -> None:
        pass

    def read_file(self, commit: str, path: str) -> str:
        self._have(commit)
        return self._git(self.git.show_file, commit, path)

    def message(self, commit: str) -> str:
        self._have(commit)
        return self._git(self.git.message, commit)

    def changed_files(self, base_commit: str, commit: str) -> list[str]:
        self._have(base_commit, commit)
        return self._git(self.git.changed_files, base_commit, commit)

    def diff(self, base_commit: str, commit: str) -> str:
        self._have(base_commit, commit)
        return self._git(self.git.diff, base_commit, commit)

    @contextmanager
    def worktree(self, commit: str) -> Iterator[Path]:
        self._have(commit)
        try:
            with self.git.worktree(commit) as path:
                yield path
        except GitError as e:
            raise self._git_error(e) from e

    def working_text(self, path: str) -> str | None:
        return self._git(self.git.read_worktree_file, path)

    def write_files(self, files: Mapping[str, str]) -> None:
        self._git(self.git.write_worktree_files, files)
