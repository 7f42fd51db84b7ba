"""The embedded forge: candidates as branches in the working repository, no accounts needed.

- a candidate is branch `autoresearch/<id>` with one commit on top of its base, built without
  touching the work tree (see GitCore.commit_files);
- merge moves the base branch (fast-forward when possible, else a merge commit); when the base
  branch is checked out the work tree follows, and uncommitted changes that would be overwritten
  make it refuse rather than lose them;
- archive moves the branch to `refs/autoresearch/archive/<id>`: off `git branch`, still reachable
  (`git log refs/autoresearch/archive/<id>`), and the ledger points there;
- there is no PR, so the status and the results comment are git notes on the candidate commit,
  under `refs/notes/autoresearch` (read them with `git log --notes=autoresearch` or
  `git notes --ref=autoresearch show <commit>`). A note is a few `key: value` header lines
  (`experiment: <id>`, `autoresearch/eval: success`, `description: ...`, `merged: <sha>`,
  `archived: <ref>`), a blank line, then the comment's Markdown (replaced, never appended).
  Notes are refs, so they travel with `git push origin refs/notes/*` if you want them elsewhere;
- the bookkeeping files are written into this work tree; persist commits them on the base branch
  and pushes when a remote is set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime

from autoresearch_ci.forge.base import (
    BRANCH_PREFIX,
    STATUS_CONTEXT,
    ForgeError,
    GitCheckout,
    StatusState,
    candidate_message,
)
from autoresearch_ci.forge.git import Git
from autoresearch_ci.forge.gitcore import (
    GIT_TIMEOUT_S,
    PUSH_ATTEMPTS,
    PUSH_BACKOFF_S,
    ZERO_OID,
    GitError,
    MergeConflict,
)
from autoresearch_ci.records import Candidate

ARCHIVE_PREFIX = "refs/autoresearch/archive/"
NOTES_REF = "refs/notes/autoresearch"


class LocalForge(GitCheckout):
    name = "local"

    def __init__(
        self,
        repo_dir: str | os.PathLike,
        base_branch: str = "main",
        remote: str | None = None,
        *,
        timeout: float = GIT_TIMEOUT_S,
        push_attempts: int = PUSH_ATTEMPTS,
        push_backoff: float = PUSH_BACKOFF_S,
    ):
        self.git = Git(repo_dir, timeout=timeout)
        self.base_branch = base_branch
        self.remote = remote
        self.push_attempts = push_attempts
        self.push_backoff = push_backoff

    # --------------------------------------------------------------------------------- reading

    def base_commit(self) -> str:
        return self._git(self.git.rev_parse, f"refs/heads/{self.base_branch}")

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
        ref = f"refs/heads/{branch}"
        if not self.git.ok("check-ref-format", ref):
            raise ForgeError(f"experiment id {experiment_id!r} cannot be part of a branch name")
        existing = self.find_candidate(experiment_id)
        if existing:
            return existing
        base = self._git(self.git.rev_parse, base_commit)
        message = candidate_message(title, body, experiment_id, meta)
        commit = self._git(self.git.commit_files, base, files, message)
        try:
            self.git.update_ref(ref, commit, ZERO_OID, reason=f"autoresearch-ci: candidate {experiment_id}")
        except GitError:
            # Created by a concurrent call between our check and now: theirs is the candidate.
            return self.open_candidate(experiment_id, base_commit, files, title, body, meta)
        return Candidate(experiment_id=experiment_id, branch=branch, base_commit=base, commit=commit)

    def find_candidate(self, experiment_id: str) -> Candidate | None:
        branch = BRANCH_PREFIX + experiment_id
        commit = self.git.try_rev_parse(f"refs/heads/{branch}") or self.git.try_rev_parse(
            ARCHIVE_PREFIX + experiment_id
        )
        if not commit:
            return None
        parents = self.git.parents(commit)
        return Candidate(
            experiment_id=experiment_id,
            branch=branch,
            base_commit=parents[0] if parents else commit,
            commit=commit,
        )

    def open_candidates(self) -> list[Candidate]:
        """The candidate branches not yet merged into the base branch nor archived."""
        out = self.git.run("for-each-ref", "--format=%(refname)", f"refs/heads/{BRANCH_PREFIX}")
        base_ref = f"refs/heads/{self.base_branch}"
        found = []
        for ref in out.splitlines():
            cand = self.find_candidate(ref.removeprefix(f"refs/heads/{BRANCH_PREFIX}"))
            merged = cand is not None and (
                self._read_note(cand.commit)[0].get("merged") or self.git.merged_at(cand.commit, base_ref)
            )
            if cand is not None and not merged:
                found.append(cand)
        return found

    def note(self, candidate: Candidate, key: str, text: str) -> None:
        headers, _ = self._read_note(candidate.commit)
        if f"note {key}" not in headers:
            self._update_note(candidate, {f"note {key}": " ".join(text.split())})

    def note_keys(self, candidate: Candidate, prefix: str) -> list[str]:
        headers, _ = self._read_note(candidate.commit)
        return [k.removeprefix("note ") for k in headers if k.startswith(f"note {prefix}")]

    def run_created_at(self, run_id: str) -> datetime | None:
        return None

    def set_status(self, candidate: Candidate, state: StatusState, description: str) -> None:
        self._update_note(candidate, {STATUS_CONTEXT: state, "description": " ".join(description.split())})

    def comment(self, candidate: Candidate, body: str) -> None:
        self._update_note(candidate, {}, comment=body)

    def merge(self, candidate: Candidate, message: str) -> str:
        headers, _ = self._read_note(candidate.commit)
        if headers.get("merged"):
            return headers["merged"]
        base_ref = f"refs/heads/{self.base_branch}"
        done = self.git.merged_at(candidate.commit, base_ref)
        if done is None:
            head = self.base_commit()
            try:
                new = self.git.merge_commit(head, candidate.commit, message)
                self.git.advance_branch(self.base_branch, new, head)
            except MergeConflict as e:
                raise ForgeError(f"cannot merge {candidate.branch} into {self.base_branch}: {e}") from e
            except GitError as e:
                raise ForgeError(str(e)) from e
            done = new
        self._update_note(candidate, {"merged": done})
        return done

    def archive(self, candidate: Candidate) -> str:
        ref = f"refs/heads/{candidate.branch}"
        archived = ARCHIVE_PREFIX + candidate.experiment_id
        if self.git.try_rev_parse(ref) is None:
            if self.git.try_rev_parse(archived) is not None:
                return archived
            raise ForgeError(f"no branch {candidate.branch} and no {archived}: nothing to archive")
        if self.git.current_branch() == ref:
            raise ForgeError(
                f"{candidate.branch} is checked out in {self.git.dir}; switch to {self.base_branch} first"
            )
        self._git(self.git.move_ref, ref, archived)
        self._update_note(candidate, {"archived": archived})
        return archived

    # ------------------------------------------------------------------------------ bookkeeping

    def persist(self, paths: list[str], message: str) -> str:
        return self._git(
            self.git.commit_and_push,
            paths,
            message,
            branch=self.base_branch,
            remote=self.remote,
            attempts=self.push_attempts,
            backoff=self.push_backoff,
        )

    # --------------------------------------------------------------------------------- notes

    def notes(self, commit: str) -> tuple[dict[str, str], str]:
        """The recorded status headers and comment of a candidate commit (empty when none)."""
        return self._read_note(commit)

    def _read_note(self, commit: str) -> tuple[dict[str, str], str]:
        text = self.git.run("notes", f"--ref={NOTES_REF}", "show", commit, check=False)
        head, _, comment = text.partition("\n\n")
        headers = dict(line.partition(": ")[::2] for line in head.splitlines() if line.strip())
        return headers, comment.strip("\n")

    def _update_note(self, candidate: Candidate, headers: dict[str, str], comment: str | None = None) -> None:
        # The experiment line comes first so the header block is never empty: git strips a note's
        # leading blank lines, which would otherwise turn a comment into headers.
        commit = candidate.commit
        old_headers, old_comment = self._read_note(commit)
        merged = {"experiment": candidate.experiment_id, **old_headers, **headers}
        body = old_comment if comment is None else comment.strip("\n")
        text = "\n".join(f"{k}: {v}" for k, v in merged.items()) + "\n\n" + body + "\n"
        if (merged, body) == (old_headers, old_comment):
            return
        self._git(
            self.git.run, "notes", f"--ref={NOTES_REF}", "add", "--force", "--file=-", commit, input=text
        )
