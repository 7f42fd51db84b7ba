"""A thin, typed wrapper over the git CLI: everything the forges do with git goes through here.

Why the CLI and not a library: git is on every machine that has a repository, behaves the same on a
laptop and in GitHub Actions, and its plumbing lets us build commits without ever touching the
user's working tree or index (a candidate commit is made in a temporary index file from blobs).

Every call runs with a timeout, with the bot identity in the environment (so a machine with no
`git config user.name` still commits), with prompts off, and in the C locale so messages can be
matched. A failure raises GitError carrying git's own stderr.

Integration of diverged history (used when a push is rejected as non-fast-forward) is done per
file with a three-way merge; for the bookkeeping files (ledger, resources.md) a conflict is
resolved by union (both sides' lines are kept), since losing a ledger line is worse than a
duplicated one. Any other conflict is an error for a human.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

GIT_TIMEOUT_S = 120.0  # per git call; fetch and push over a slow network stay well inside it
PUSH_ATTEMPTS = 5
PUSH_BACKOFF_S = 1.0  # doubled after every rejected push
BOT_NAME = "autoresearch-ci[bot]"
BOT_EMAIL = "autoresearch-ci[bot]@users.noreply.github.com"
ZERO_OID = "0" * 40

# Messages git prints for a network hiccup worth one more try (not for a rejection).
TRANSIENT_MARKERS = (
    "could not resolve host",
    "connection timed out",
    "connection reset",
    "failed to connect",
    "early eof",
    "rpc failed",
    "the requested url returned error: 5",
    "remote end hung up unexpectedly",
    "operation timed out",
)

FileContent = str | bytes | None  # None deletes the path


class GitError(RuntimeError):
    """A git command failed; `stderr` is git's own explanation."""

    def __init__(
        self, message: str, *, args: Iterable[str] = (), returncode: int | None = None, stderr: str = ""
    ):
        super().__init__(message)
        self.cmd = list(args)
        self.returncode = returncode
        self.stderr = stderr


class PushRejected(GitError):
    """The remote refused the push because it has commits we do not (non-fast-forward)."""


class MergeConflict(GitError):
    """Both sides changed the same lines of a file that may not be union-merged."""

    def __init__(self, message: str, paths: list[str]):
        super().__init__(message)
        self.paths = paths


def bot_env(name: str = BOT_NAME, email: str = BOT_EMAIL) -> dict[str, str]:
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }


def _check_path(path: str) -> str:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or path.startswith(".git/") or path == ".git":
        raise GitError(f"refusing to write path {path!r}: it must be relative and inside the repository")
    return str(p)


def _to_bytes(content: str | bytes) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


class Git:
    """One repository (a work tree or a bare repository) driven through the git CLI."""

    def __init__(
        self,
        repo_dir: str | os.PathLike,
        *,
        timeout: float = GIT_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ):
        self.dir = Path(repo_dir)
        self.timeout = timeout
        base = {
            k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")
        }
        self.env = {
            **base,
            **bot_env(),
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
            "LANGUAGE": "C",
            **(env or {}),
        }

    # ----------------------------------------------------------------------------------- running

    def run_bytes(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        cmd = ["git", "-C", str(self.dir), "-c", "commit.gpgsign=false", "-c", "core.quotepath=false", *args]
        limit = timeout or self.timeout
        try:
            # A session of its own, so a timeout kills git's children too (ssh, credential helpers,
            # hooks) instead of leaving them holding the pipes open.
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**self.env, **(env or {})},
                start_new_session=True,
            )
        except FileNotFoundError as e:
            raise GitError("git is not installed (no `git` on PATH)", args=args) from e
        try:
            stdout, stderr_b = proc.communicate(input, timeout=limit)
        except subprocess.TimeoutExpired as e:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise GitError(
                f"git {' '.join(args)} timed out after {limit:g} s in {self.dir}", args=args
            ) from e
        proc = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr_b)
        if check and proc.returncode != 0:
            stderr = proc.stderr.decode("utf-8", "replace").strip()
            detail = stderr or proc.stdout.decode("utf-8", "replace").strip()
            raise GitError(
                f"git {' '.join(args)} failed (exit {proc.returncode}) in {self.dir}: {detail}",
                args=args,
                returncode=proc.returncode,
                stderr=stderr,
            )
        return proc

    def run(
        self,
        *args: str,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> str:
        """Run git and return stdout as text (trailing newline stripped)."""
        data = _to_bytes(input) if input is not None else None
        proc = self.run_bytes(*args, input=data, env=env, check=check, timeout=timeout)
        return proc.stdout.decode("utf-8", "replace").rstrip("\n")

    def ok(self, *args: str) -> bool:
        """True when the git command exits 0 (for predicates such as merge-base --is-ancestor)."""
        return self.run_bytes(*args, check=False).returncode == 0

    # ------------------------------------------------------------------------------------ reading

    def rev_parse(self, rev: str) -> str:
        """The full commit id `rev` names; GitError when it names nothing."""
        out = self.run(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", check=False
        )
        if not out:
            raise GitError(f"{rev!r} does not name a commit in {self.dir}")
        return out

    def try_rev_parse(self, rev: str) -> str | None:
        try:
            return self.rev_parse(rev)
        except GitError:
            return None

    def has_commit(self, sha: str) -> bool:
        return self.ok("cat-file", "-e", f"{sha}^{{commit}}")

    def read_bytes(self, commit: str, path: str) -> bytes:
        proc = self.run_bytes("cat-file", "blob", f"{commit}:{path}", check=False)
        if proc.returncode != 0:
            raise GitError(
                f"{path} does not exist at {commit[:12]} in {self.dir}", stderr=proc.stderr.decode()
            )
        return proc.stdout

    def show_file(self, commit: str, path: str) -> str:
        """A file's text at a commit (`git show commit:path`, without textconv or filters)."""
        return self.read_bytes(commit, path).decode("utf-8")

    def blob_id(self, commit: str, path: str) -> str | None:
        """The blob id of path at commit, or None where the path does not exist there."""
        out = self.run("rev-parse", "--verify", "--quiet", f"{commit}:{path}", check=False)
        return out or None

    def parents(self, commit: str) -> list[str]:
        return self.run("rev-list", "--parents", "-n", "1", commit).split()[1:]

    def message(self, commit: str) -> str:
        return self.run("log", "-1", "--format=%B", commit)

    def changed_files(self, a: str, b: str) -> list[str]:
        """Paths that differ between two commits; a rename lists both its old and its new path."""
        out = self.run_bytes("diff", "--name-only", "--no-renames", "-z", a, b).stdout.decode(
            "utf-8", "replace"
        )
        return [p for p in out.split("\0") if p]

    def diff(self, a: str, b: str, *, stat: bool = False) -> str:
        args = ["diff", "--no-color", "--no-ext-diff", "--src-prefix=a/", "--dst-prefix=b/"]
        if stat:
            args.append("--stat=100")
        out = self.run(*args, a, b)
        return out + "\n" if out and not stat else out

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return self.ok("merge-base", "--is-ancestor", ancestor, descendant)

    def merge_base(self, a: str, b: str) -> str | None:
        out = self.run("merge-base", a, b, check=False)
        return out or None

    def current_branch(self) -> str | None:
        """The full ref HEAD points at (refs/heads/main), or None when HEAD is detached or bare."""
        out = self.run("symbolic-ref", "-q", "HEAD", check=False)
        if not out or self.is_bare():
            return None
        return out

    def is_bare(self) -> bool:
        return self.run("rev-parse", "--is-bare-repository") == "true"

    def merged_at(self, commit: str, branch_ref: str) -> str | None:
        """Where `commit` entered the first-parent history of branch_ref: the merge commit that
        brought it in, or the commit itself when it was fast-forwarded; None when not merged."""
        head = self.rev_parse(branch_ref)
        if not self.is_ancestor(commit, head):
            return None
        if head == self.rev_parse(commit):
            return head
        first = self.run("rev-list", "--first-parent", "--ancestry-path", "--reverse", f"{commit}..{head}")
        entry = first.splitlines()[0] if first else head
        parents = self.parents(entry)
        return commit if parents and parents[0] == self.rev_parse(commit) else entry

    # ------------------------------------------------------------------------------------- writing

    def commit_files(
        self,
        base: str,
        files: Mapping[str, FileContent],
        message: str,
        *,
        parents: list[str] | None = None,
    ) -> str:
        """A new commit = base's tree with `files` written (None deletes), parented on `parents`
        (default [base]). Builds it in a temporary index: the work tree and the user's index are
        never touched, and no ref moves."""
        with tempfile.TemporaryDirectory(prefix="autoresearch-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            self.run("read-tree", base, env=env)
            lines = []
            for path, content in files.items():
                path = _check_path(path)
                if content is None:
                    self.run("update-index", "--force-remove", "--", path, env=env)
                    continue
                blob = self.run("hash-object", "-w", "--stdin", input=_to_bytes(content))
                mode = self._mode(base, path) or "100644"
                lines.append(f"{mode} {blob}\t{path}")
            if lines:
                self.run("update-index", "--add", "--index-info", input="\n".join(lines) + "\n", env=env)
            tree = self.run("write-tree", env=env)
        parent_args: list[str] = []
        for p in parents if parents is not None else [base]:
            parent_args += ["-p", p]
        return self.run("commit-tree", tree, *parent_args, "-F", "-", input=message.rstrip("\n") + "\n")

    def _mode(self, commit: str, path: str) -> str | None:
        out = self.run("ls-tree", commit, "--", path, check=False)
        return out.split()[0] if out and out.split()[1] == "blob" else None

    def update_ref(
        self, ref: str, new: str, old: str | None = None, *, reason: str = "autoresearch-ci"
    ) -> None:
        """Point ref at new; with `old`, only if it still points there (ZERO_OID: only if absent)."""
        args = ["update-ref", "-m", reason, ref, new]
        if old is not None:
            args.append(old)
        self.run(*args)

    def delete_ref(self, ref: str, old: str | None = None) -> None:
        self.run("update-ref", "-d", ref, *([old] if old else []))

    def move_ref(self, src: str, dst: str) -> str:
        """Rename a ref atomically (dst must not exist, or already point at the same commit)."""
        sha = self.rev_parse(src)
        existing = self.try_rev_parse(dst)
        if existing not in (None, sha):
            raise GitError(f"cannot move {src} to {dst}: {dst} already exists at {existing[:12]}")
        tx = f"update {dst} {sha}\ndelete {src} {sha}\n"
        self.run("update-ref", "-m", "autoresearch-ci: move", "--stdin", input=tx)
        return sha

    def commit_paths(self, paths: list[str], message: str) -> str:
        """Commit the work tree's content of `paths` on the current branch (other staged changes
        are left staged and out of the commit). Returns HEAD, unchanged when nothing differed."""
        if self.current_branch() is None:
            raise GitError(
                f"HEAD is detached in {self.dir}: check out a branch before committing bookkeeping files"
            )
        paths = [_check_path(p) for p in paths]
        self.run("add", "-A", "--", *paths)
        if self.ok("diff", "--cached", "--quiet", "HEAD", "--", *paths):
            return self.rev_parse("HEAD")
        self.run("commit", "--no-verify", "--quiet", "--only", "-F", "-", "--", *paths, input=message)
        return self.rev_parse("HEAD")

    def advance_branch(self, branch: str, new: str, old: str) -> None:
        """Move refs/heads/<branch> from old to new. When the branch is checked out here, the
        work tree follows (`git reset --keep`): local changes to files that differ between the two
        commits make it refuse, with a message saying which and what to do."""
        ref = f"refs/heads/{branch}"
        if self.current_branch() == ref:
            if self.rev_parse("HEAD") != old:
                raise GitError(f"{branch} moved while we worked (expected {old[:12]}); run again")
            proc = self.run_bytes("reset", "--quiet", "--keep", new, check=False)
            if proc.returncode != 0:
                detail = proc.stderr.decode("utf-8", "replace").strip()
                raise GitError(
                    f"{branch} is checked out in {self.dir} with uncommitted changes that conflict with "
                    f"the update to {new[:12]}; commit or stash them, then run again. git said: {detail}",
                    stderr=detail,
                )
        else:
            self.update_ref(ref, new, old)

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
        for attempt in range(1, attempts + 1):
            proc = self.run_bytes(*args, check=False)
            if proc.returncode == 0:
                return proc
            err = proc.stderr.decode("utf-8", "replace")
            if attempt < attempts and any(m in err.lower() for m in TRANSIENT_MARKERS):
                time.sleep(backoff * 2 ** (attempt - 1))
                continue
            return proc
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
        last: GitError | None = None
        for attempt in range(1, attempts + 1):
            local = self.rev_parse(ref)
            upstream = self._remote_head(remote, branch)
            if upstream is not None and upstream != local:
                merged = self.integrate(local, upstream, union_paths=union_paths)
                if merged != local:
                    self.advance_branch(branch, merged, local)
                    local = merged
            if upstream == local:
                return local
            try:
                self.push(remote, f"{ref}:{ref}")
                return local
            except PushRejected as e:
                last = e
                if attempt < attempts:
                    time.sleep(backoff * 2 ** (attempt - 1))
        raise GitError(f"push of {branch} to {remote} was still rejected after {attempts} attempts: {last}")

    def _remote_head(self, remote: str, branch: str) -> str | None:
        """Fetch the remote's branch; None when the remote does not have it yet."""
        try:
            return self.fetch_branch(remote, branch)
        except GitError as e:
            if "couldn't find remote ref" in str(e).lower():
                return None
            raise

    def worktree_contents(self, paths: list[str]) -> dict[str, FileContent]:
        """The work tree's bytes of each path (None where the file is gone)."""
        if self.is_bare():
            raise GitError(f"{self.dir} is a bare repository: there are no work-tree files to commit")
        out: dict[str, FileContent] = {}
        for p in paths:
            f = self.dir / _check_path(p)
            out[p] = f.read_bytes() if f.exists() else None
        return out

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
        return content is None or _to_bytes(content) != current
