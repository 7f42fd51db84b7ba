"""The git plumbing the forges drive: running git, reading a repository, writing commits and refs
without touching the work tree, and the work tree itself (a throwaway checkout for a guard command,
bookkeeping files in and out). git.py adds what crosses a remote: merging and pushing.

Why the CLI and not a library: git is on every machine that has a repository, behaves the same on a
laptop and in GitHub Actions, and its plumbing lets us build commits without ever touching the
user's working tree or index (a candidate commit is made in a temporary index file from blobs).

Every call runs with a timeout, with the bot identity in the environment (so a machine with no
`git config user.name` still commits), with prompts off, and in the C locale so messages can be
matched. A failure raises GitError carrying git's own stderr.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath

from autoresearch_ci.files import write_atomically

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


def to_bytes(content: str | bytes) -> bytes:
    return content.encode("utf-8") if isinstance(content, str) else content


class GitCore:
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
        data = to_bytes(input) if input is not None else None
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
                blob = self.run("hash-object", "-w", "--stdin", input=to_bytes(content))
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
            # The index's stat data goes stale when the checkout is copied or restored (cp -r, a CI
            # cache): without a refresh `reset --keep` takes every such file for a local change.
            self.run("update-index", "-q", "--refresh", check=False)
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

    # ------------------------------------------------------------------------------- work tree

    @contextlib.contextmanager
    def worktree(self, commit: str) -> Iterator[Path]:
        """A throwaway detached checkout of `commit`, removed on exit (where a guard command runs)."""
        with tempfile.TemporaryDirectory(prefix="autoresearch-guard-") as tmp:
            wt = Path(tmp) / "wt"
            self.run("worktree", "add", "--detach", str(wt), commit)
            try:
                yield wt
            finally:
                self.run("worktree", "remove", "--force", str(wt), check=False)

    def read_worktree_file(self, path: str) -> str | None:
        """A file's text in the work tree (None where it does not exist)."""
        f = self.dir / _check_path(path)
        return f.read_text(encoding="utf-8") if f.exists() else None

    def write_worktree_files(self, files: Mapping[str, str]) -> None:
        """Write these files into the work tree, each atomically; nothing is staged or committed."""
        if self.is_bare():
            raise GitError(f"{self.dir} is a bare repository: there is no work tree to write to")
        for path, text in files.items():
            write_atomically(self.dir / _check_path(path), text)

    def worktree_contents(self, paths: list[str]) -> dict[str, FileContent]:
        """The work tree's bytes of each path (None where the file is gone)."""
        if self.is_bare():
            raise GitError(f"{self.dir} is a bare repository: there are no work-tree files to commit")
        out: dict[str, FileContent] = {}
        for p in paths:
            f = self.dir / _check_path(p)
            out[p] = f.read_bytes() if f.exists() else None
        return out
