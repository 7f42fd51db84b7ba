"""The compile cache that survives between runs, for a fast warm start: the harness's, not the candidate's.

torch.compile (inductor, triton) writes its kernels under the sandbox's $HOME/.cache, and so does the
CUDA driver with what it compiled from PTX (CUDA_CACHE_PATH, harness/sandbox.py). After a run,
once nothing of the sandbox is alive, the harness keeps that directory in
<state root>/compile/<sha256 of train.py>/ and seeds the next run of the *same* train.py with a
copy. What the scoring's model processes compiled (preset.compile_scoring) is added to it (`merge`),
and they are seeded from it too. A partition is only ever read by runs of the train.py that wrote
it, so one candidate cannot poison another's kernels or the baseline's. Only regular files and
directories are copied (no symlinks, no devices), up to MAX_BYTES; a partition that would grow past
it is not kept.
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


def merge(scratch: Path, train_sha256: str) -> int:
    """After a scoring model process is dead: add to the partition what its compile left in its
    $HOME/.cache and the partition lacks (bytes added; 0 when nothing, or when the partition would
    grow past MAX_BYTES). The model processes run the same train.py, so their kernels belong to the
    same partition; what is already there is never replaced."""
    try:
        return _merge(scratch / SUBDIR, partition(train_sha256))
    except OSError:
        return 0


def _merge(src: Path, part: Path) -> int:
    # Only what the partition lacks is read: a warm run's model process holds the whole seeded copy
    # (tens of MB in thousands of small files), and copying that to find nothing new took longer
    # than the scoring it follows.
    if not src.is_dir() or src.is_symlink() or not part.is_dir():
        return 0
    missing: list[tuple[Path, Path, int]] = []
    for root, _dirs, files in os.walk(src, followlinks=False):
        for name in files:
            s = Path(root) / name
            d = part / s.relative_to(src)
            st = s.lstat()
            if stat.S_ISREG(st.st_mode) and not os.path.lexists(d):
                missing.append((s, d, st.st_size))
    if not missing:
        return 0
    have = sum(p.lstat().st_size for p in part.rglob("*") if p.is_file() and not p.is_symlink())
    total = sum(n for _, _, n in missing)
    if have + total > MAX_BYTES:
        return 0
    for s, d, _ in missing:
        d.parent.mkdir(parents=True, exist_ok=True)
        if d.parent.is_symlink() or not d.parent.resolve().is_relative_to(part.resolve()):
            continue  # never through a link, though the partition holds none (_copy_tree copies none)
        tmp = d.with_name(f"{d.name}.merge-{os.getpid()}")
        _copy_file(s, tmp)
        os.replace(tmp, d)
    return total


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
