"""Small builders for throwaway git repositories: a work tree with a first commit on main, a bare
remote it pushes to, and more clones of that remote (to play the other party in a race)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from autoresearch_ci.forge.git import Git


def git(cwd: Path, *args: str) -> str:
    return Git(cwd).run(*args)


def init_repo(path: Path, files: dict[str, str] | None = None, branch: str = "main") -> Git:
    """A work tree on `branch` with one commit holding `files`."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", "-b", branch, str(path)], check=True)
    g = Git(path)
    for name, text in (files or {"train.py": "LR = 0.01\nSTEPS = 10\n", "ledger.jsonl": ""}).items():
        f = path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    g.run("add", "-A")
    g.run("commit", "-q", "-m", "initial")
    return g


def init_bare_remote(work: Git, bare: Path, branch: str = "main") -> Git:
    """A bare repository seeded from `work`, added to it as `origin` with upstream tracking."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", branch, str(bare)], check=True)
    work.run("remote", "add", "origin", str(bare))
    work.run("push", "-q", "-u", "origin", branch)
    return Git(bare)


def clone(bare: Path, dest: Path) -> Git:
    subprocess.run(["git", "clone", "-q", str(bare), str(dest)], check=True)
    return Git(dest)
