"""The Git a forge holds: GitCore's plumbing plus what crosses a remote.

Integration of diverged history (used when a push is rejected as non-fast-forward) is done per
file with a three-way merge; for the bookkeeping files (ledger, resources.md) a conflict is
resolved by union (both sides' lines are kept), since losing a ledger line is worse than a
duplicated one. Any other conflict is an error for a human. Fetches and pushes retry a network
hiccup (never a rejection); a push that loses a race is re-integrated and retried.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from autoresearch_ci.forge.gitcore import (
    PUSH_ATTEMPTS,
    PUSH_BACKOFF_S,
    TRANSIENT_MARKERS,
    ZERO_OID,
    FileContent,
    GitCore,
    GitError,
    MergeConflict,
    PushRejected,
    to_bytes,
)
from autoresearch_ci.retry import retrying


class _Hiccup(Exception):
    """A network failure git reported that one more try may get past."""

    def __init__(self, proc: subprocess.CompletedProcess):
        super().__init__(proc.stderr.decode("utf-8", "replace").strip())
        self.proc = proc


class Git(GitCore):
    # --------------------------------------------------------------------------------- merging

    def three_way(
        self, base: str | None, ours: str, theirs: str, *, union_paths: Iterable[str] = ()
    ) -> dict[str, FileContent]:
        """The file changes to apply on top of `ours` so it also holds what `theirs` changed since
        `base`. Conflicting edits to a path in union_paths keep both sides' lines; any other
        conflict raises MergeConflict."""
        union = set(union_paths)
        changes: dict[str, FileContent] = {}
        conflicts: list[str] = []
        paths = (
            self.changed_files(base, theirs)
            if base
            else self.run("ls-tree", "-r", "--name-only", theirs).split("\n")
        )
        for path in filter(None, paths):
            b = self.blob_id(base, path) if base else None
            o = self.blob_id(ours, path)
            t = self.blob_id(theirs, path)
            if t in (b, o):
                continue  # theirs did not change it, or both made the same change
            if o == b:
                changes[path] = None if t is None else self.read_bytes(theirs, path)
                continue
            if o is None or t is None:  # one side deleted what the other changed
                conflicts.append(path)
                continue
            sides = (
                self.read_bytes(ours, path),
                self.read_bytes(base, path) if b else b"",
                self.read_bytes(theirs, path),
            )
            merged, clean = self._merge_file(*sides, union=False)
            if not clean and path in union:
                merged, clean = self._merge_file(*sides, union=True)
            if clean:
                changes[path] = merged
            else:
                conflicts.append(path)
        if conflicts:
            raise MergeConflict(
                f"{ours[:12]} and {theirs[:12]} both changed {', '.join(conflicts)} since {str(base)[:12]}; "
                "resolve it by hand (merge the two and run again)",
                conflicts,
            )
        return changes

    def _merge_file(self, ours: bytes, base: bytes, theirs: bytes, *, union: bool) -> tuple[bytes, bool]:
        with tempfile.TemporaryDirectory(prefix="autoresearch-merge-") as tmp:
            names = []
            for name, data in (("ours", ours), ("base", base), ("theirs", theirs)):
                p = Path(tmp) / name
                p.write_bytes(data)
                names.append(str(p))
            args = ["merge-file", "-p", *(["--union"] if union else []), *names]
            proc = self.run_bytes(*args, check=False)
            if proc.returncode < 0 or proc.returncode > 127:
                raise GitError(f"git merge-file failed: {proc.stderr.decode('utf-8', 'replace')}")
            return proc.stdout, proc.returncode == 0

    def merge_commit(self, ours: str, theirs: str, message: str, *, union_paths: Iterable[str] = ()) -> str:
        """The commit that merges theirs into ours: theirs itself when ours is its ancestor (a
        fast-forward), ours when theirs is already in it, else a two-parent merge commit. Built
        without touching any work tree; no ref moves."""
        if self.is_ancestor(ours, theirs):
            return self.rev_parse(theirs)
        if self.is_ancestor(theirs, ours):
            return self.rev_parse(ours)
        base = self.merge_base(ours, theirs)
        changes = self.three_way(base, ours, theirs, union_paths=union_paths)
        return self.commit_files(ours, changes, message, parents=[ours, theirs])

    def replay_commit(self, commit: str, onto: str, *, union_paths: Iterable[str] = ()) -> str:
        """Re-apply one single-parent commit's change on top of `onto` (a cherry-pick made without
        a work tree), keeping its message."""
        parents = self.parents(commit)
        if len(parents) != 1:
            raise GitError(f"cannot replay {commit[:12]}: it has {len(parents)} parents")
        changes = self.three_way(parents[0], onto, commit, union_paths=union_paths)
        return self.commit_files(onto, changes, self.message(commit))

    def integrate(self, local: str, upstream: str, *, union_paths: Iterable[str] = ()) -> str:
        """A commit holding both local's and upstream's history, with upstream as an ancestor:
        local's own commits replayed onto upstream when they are all single-parent (a rebase),
        else a merge of upstream into local."""
        if self.is_ancestor(upstream, local):
            return local
        if self.is_ancestor(local, upstream):
            return upstream
        base = self.merge_base(local, upstream)
        own = self.run("rev-list", "--reverse", f"{base}..{local}" if base else local).split()
        if base and all(len(self.parents(c)) == 1 for c in own):
            head = upstream
            for c in own:
                head = self.replay_commit(c, head, union_paths=union_paths)
            return head
        return self.merge_commit(
            local, upstream, "Merge upstream bookkeeping (autoresearch-ci)", union_paths=union_paths
        )

    # ---------------------------------------------------------------------------------- remotes

    def _network(
        self, *args: str, attempts: int = 3, backoff: float = PUSH_BACKOFF_S
    ) -> subprocess.CompletedProcess:
        """Run a fetch/push/ls-remote, retrying transient network failures (never rejections)."""

        def once() -> subprocess.CompletedProcess:
            proc = self.run_bytes(*args, check=False)
            err = proc.stderr.decode("utf-8", "replace").lower()
            if proc.returncode != 0 and any(m in err for m in TRANSIENT_MARKERS):
                raise _Hiccup(proc)
            return proc

        try:
            for attempt in retrying(attempts - 1, backoff, lambda e: isinstance(e, _Hiccup)):
                with attempt:
                    return once()
        except _Hiccup as e:
            return e.proc
        raise AssertionError("unreachable")

    def fetch(self, remote: str, *refspecs: str) -> None:
        proc = self._network("fetch", "--quiet", "--no-tags", remote, *refspecs)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise GitError(
                f"git fetch {remote} {' '.join(refspecs)} failed: {err}",
                stderr=err,
                returncode=proc.returncode,
            )

    def fetch_branch(self, remote: str, branch: str) -> str:
        """Fetch remote's branch into refs/remotes/<remote>/<branch>; returns its head."""
        tracking = f"refs/remotes/{remote}/{branch}"
        self.fetch(remote, f"+refs/heads/{branch}:{tracking}")
        return self.rev_parse(tracking)

    def ls_remote(self, remote: str, ref: str) -> str | None:
        proc = self._network("ls-remote", remote, ref)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise GitError(f"git ls-remote {remote} {ref} failed: {err}", stderr=err)
        for line in proc.stdout.decode().splitlines():
            sha, name = line.split("\t", 1)
            if name == ref:
                return sha
        return None

    def push(self, remote: str, *refspecs: str) -> None:
        """Push; PushRejected when the remote has commits we lack, GitError for anything else."""
        proc = self._network("push", "--porcelain", remote, *refspecs)
        if proc.returncode == 0:
            return
        out = proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")
        low = out.lower()
        if "[rejected]" in low and any(k in low for k in ("non-fast-forward", "fetch first", "stale info")):
            raise PushRejected(
                f"push to {remote} rejected (non-fast-forward): {out.strip()}",
                stderr=out,
                returncode=proc.returncode,
            )
        raise GitError(
            f"git push {remote} {' '.join(refspecs)} failed: {out.strip()}",
            stderr=out,
            returncode=proc.returncode,
        )

    def push_branch(
        self,
        branch: str,
        remote: str,
        *,
        union_paths: Iterable[str] = (),
        attempts: int = PUSH_ATTEMPTS,
        backoff: float = PUSH_BACKOFF_S,
    ) -> str:
        """Make the remote's branch hold the local one. Before each try the remote is fetched and,
        where it moved on, the local commits are re-applied on top of it (see `integrate`) and the
        local branch (and the work tree, when checked out) follows. A push that still loses a race
        is retried with exponential backoff, `attempts` times in all. Returns the pushed commit."""
        ref = f"refs/heads/{branch}"
        union_paths = list(union_paths)
        try:
            for attempt in retrying(attempts - 1, backoff, lambda e: isinstance(e, PushRejected)):
                with attempt:
                    local = self.rev_parse(ref)
                    upstream = self._remote_head(remote, branch)
                    if upstream is not None and upstream != local:
                        merged = self.integrate(local, upstream, union_paths=union_paths)
                        if merged != local:
                            self.advance_branch(branch, merged, local)
                            local = merged
                    if upstream == local:
                        return local
                    self.push(remote, f"{ref}:{ref}")
                    return local
        except PushRejected as e:
            raise GitError(
                f"push of {branch} to {remote} was still rejected after {attempts} attempts: {e}"
            ) from e
        raise AssertionError("unreachable")

    def _remote_head(self, remote: str, branch: str) -> str | None:
        """Fetch the remote's branch; None when the remote does not have it yet."""
        try:
            return self.fetch_branch(remote, branch)
        except GitError as e:
            if "couldn't find remote ref" in str(e).lower():
                return None
            raise

    def commit_and_push(
        self,
        paths: list[str],
        message: str,
        *,
        branch: str,
        remote: str | None,
        attempts: int = PUSH_ATTEMPTS,
        backoff: float = PUSH_BACKOFF_S,
    ) -> str:
        """Commit the work tree's `paths` onto `branch` and, with a remote, push it there (see
        push_branch; conflicting edits to these paths are union-merged). When the branch is
        checked out the commit is made there; otherwise it is built from the files' contents on top
        of the branch without touching the index. Returns the branch head that landed."""
        ref = f"refs/heads/{branch}"
        if self.current_branch() == ref:
            head = self.commit_paths(paths, message)
        else:
            old = self.try_rev_parse(ref)
            if old is None:
                if remote is None:
                    raise GitError(f"branch {branch} does not exist in {self.dir}")
                old = self.fetch_branch(remote, branch)
                self.update_ref(ref, old, ZERO_OID)
            contents = self.worktree_contents(paths)
            changed = {p: c for p, c in contents.items() if self._differs(old, p, c)}
            head = old
            if changed:
                head = self.commit_files(old, changed, message)
                self.update_ref(ref, head, old)
        if remote is None:
            return head
        return self.push_branch(branch, remote, union_paths=paths, attempts=attempts, backoff=backoff)

    def _differs(self, commit: str, path: str, content: FileContent) -> bool:
        try:
            current = self.read_bytes(commit, path)
        except GitError:
            return content is not None
        return content is None or to_bytes(content) != current
