"""The compile cache that survives between runs, for a fast warm start: the harness's, not the candidate's.

torch.compile (inductor, triton) writes its kernels under the sandbox's $HOME/.cache, and so does the
CUDA driver with what it compiled from PTX (CUDA_CACHE_PATH, harness/sandbox.py). After a run,
once nothing of the sandbox is alive, the harness keeps that directory in
<state root>/compile/<sha256 of train.py>/ and seeds the next run of the *same* train.py with a
copy; the scoring's model processes are seeded from it too. A partition is only ever read by runs of
the train.py that wrote it, so one candidate cannot poison another's kernels or the baseline's.

Only the training sandbox's directory is kept, never a model process's. A model process sees the
validation rows (it computes their logits) and runs the candidate's code, which may write anything
into its cache directory; the next run of the same train.py, a replication, starts from this
partition. Keeping what the scoring compiled once carried the validation rows into that run's
training (tests/redteam/leak_val_cache.py). The training never sees validation data, so what it
leaves carries none. The scoring therefore compiles its forward afresh in every run, beside the
training (a cold compile: 19-24 s per model process on an H200 host, against a 300-s budget).

Only regular files and directories are copied (no symlinks, no devices), up to MAX_BYTES; a
partition that would grow past it is not kept.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

MAX_BYTES = 4 << 30
SUBDIR = ".cache"


def partition(train_sha256: str) -> Path:
    """AUTORESEARCH_COMPILE_CACHE/<sha>, else <the harness's state>/compile/<sha> (harness/protocol.py:
    state_root, writable where the data may be read-only)."""
    base = os.environ.get("AUTORESEARCH_COMPILE_CACHE")
    if base:
        return Path(base) / train_sha256
    from harness.protocol import state_root

    return Path(state_root()) / "compile" / train_sha256


def _copy_file(src: Path, dst: Path) -> None:
    """One regular file's bytes, never through a link at src."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo)


def _copy_tree(src: Path, dst: Path, owner: tuple[int, int] | None) -> int:
    """Copy regular files and directories only, never following a link; returns bytes copied, or -1
    when the tree is over MAX_BYTES, read when it runs (nothing is left half-copied at dst then)."""
    limit = MAX_BYTES
    total = 0
    plan: list[tuple[Path, Path, bool]] = []
    for root, dirs, files in os.walk(src, followlinks=False):
        r = Path(root)
        for name in dirs + files:
            p = r / name
            st = p.lstat()
            if stat.S_ISDIR(st.st_mode):
                plan.append((p, dst / p.relative_to(src), True))
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
                plan.append((p, dst / p.relative_to(src), False))
        if total > limit:
            return -1
    dst.mkdir(parents=True, exist_ok=True)
    for s, d, is_dir in plan:
        if is_dir:
            d.mkdir(exist_ok=True)
        else:
            _copy_file(s, d)
        if owner:
            os.chown(d, *owner)
    if owner:
        os.chown(dst, *owner)
    return total


def seed(scratch: Path, train_sha256: str, owner: tuple[int, int] | None) -> int:
    """Copy the partition of this train.py into a sandbox's $HOME/.cache (bytes; 0 if none, or if it
    cannot be read: a cold start, never a failed run).

    The copy is made beside the scratch directory, in its parent (the run directory, which the
    sandboxed uid cannot write), and moved into place in one rename. So the seed may run while the
    sandbox already starts (the worker imports torch meanwhile), and this process never writes
    through a path that a sandboxed process could swap for a link."""
    part = partition(train_sha256)
    if not part.is_dir():
        return 0
    staging = scratch.parent / f".{scratch.name}-cache-seed-{os.getpid()}"
    try:
        n = _copy_tree(part, staging, owner)
        if n < 0:
            return 0
        os.rename(staging, scratch / SUBDIR)  # fails, and seeds nothing, if the sandbox made one first
        return n
    except OSError:
        return 0
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def keep(scratch: Path, train_sha256: str) -> int:
    """After the sandbox is dead: replace the partition with what the run left in $HOME/.cache."""
    try:
        return _keep(scratch / SUBDIR, partition(train_sha256))
    except OSError:  # a read-only or full cache: the next run starts cold
        return 0


def _keep(src: Path, part: Path) -> int:
    if not src.is_dir() or src.is_symlink():
        return 0
    tmp = part.with_name(part.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    n = _copy_tree(src, tmp, None)
    if n <= 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    shutil.rmtree(part, ignore_errors=True)
    os.replace(tmp, part)
    return n
