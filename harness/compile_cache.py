"""The compile cache that survives between runs, for a fast warm start: the harness's, not the candidate's.

torch.compile (inductor, triton) writes its kernels under the sandbox's $HOME/.cache, and so does
the CUDA driver with what it compiled from PTX (CUDA_CACHE_PATH, harness/sandbox.py). The harness
keeps that directory, as it was when the training's clock started (below), in
<state root>/compile/at-clock-start/<sha256 of train.py>/ and seeds the next run of the *same*
train.py with a copy; the scoring's model processes are seeded from it too. A partition is only ever
read by runs of the train.py that wrote it, so one candidate cannot poison another's kernels or the
baseline's.

Only the training sandbox's directory is kept, never a model process's. A model process sees the
validation rows (it computes their logits) and runs the candidate's code, which may write anything
into its cache directory; the next run of the same train.py, a replication, starts from this
partition. Keeping what the scoring compiled once carried the validation rows into that run's
training (tests/redteam/leak_val_cache.py). The training never sees validation data, so what it
leaves carries none. The scoring therefore compiles its forward afresh in every run, beside the
training (a cold compile: 19-24 s per model process on an H200 host, against a 300-s budget).

What is kept is the cache *as it was when the training's clock started* (`snapshot`, taken by the
supervisor before it starts the clock and serves the first batch), not as the run left it. The
partition is a channel from one run of a train.py to the next (a replication, a confirmation, every
tick's baseline): a training that wrote its weights there after training would start the next run
where this one ended, twice the budget (tests/redteam/carry_state.py, reproduced before this rule).
Before its clock starts a training has seen no data (in bubblewrap the sandbox cannot read the
data cache; batches come only from the supervisor, and the first one starts the clock), so what its
cache holds then, and by induction every partition, carries nothing learnt from the data; what it
writes, rewrites or deletes afterwards is never kept. Compiling belongs before the clock anyway:
train.py compiles and runs its first step in its warm-up. A run whose clock never started saw no
batch either, so it keeps what it left, once nothing of it is alive.

Only regular files and directories are copied (no symlinks, no devices), up to MAX_BYTES and
MAX_FILES; a partition that would grow past them is not kept. The snapshot reads a tree that the
sandbox may be changing at that moment, so every copy (`_copy_tree`: the seed's, the snapshot's, the
kept one's) walks by directory descriptors (os.fwalk, never following a link) and opens each file
relative to its directory, without following a link and without blocking on a FIFO. A snapshot is
moved into the partition, not copied again, where both lie on one filesystem.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path
from typing import NamedTuple

MAX_BYTES = 4 << 30
MAX_FILES = 200_000  # a real cache holds thousands; a tree past this is not copied while the clock waits
SUBDIR = ".cache"
# The partitions' layout: "at-clock-start" since partitions hold the cache as it was when the clock
# started. A partition kept by an older harness (what its run left at the end) is never read.
LAYOUT = "at-clock-start"


def partition(train_sha256: str) -> Path:
    """AUTORESEARCH_COMPILE_CACHE/LAYOUT/<sha>, else <the harness's state>/compile/LAYOUT/<sha>
    (harness/protocol.py: state_root, writable where the data may be read-only)."""
    base = os.environ.get("AUTORESEARCH_COMPILE_CACHE")
    if base:
        return Path(base) / LAYOUT / train_sha256
    from harness.protocol import state_root

    return Path(state_root()) / "compile" / LAYOUT / train_sha256


def _copy_tree(src: Path, dst: Path, owner: tuple[int, int] | None = None) -> int:
    """Regular files and directories under `src` into `dst` (made here, and given to `owner`), never
    through a link, and safe against a tree that changes meanwhile (the snapshot reads one that the
    live sandbox can write): walked by directory descriptors (os.fwalk), each file opened relative
    to its directory, without following a link and without blocking on a FIFO. Bytes copied; 0 when
    `src` is no directory (or a link to one); -1 past MAX_BYTES or MAX_FILES, with what was copied
    left at `dst` for the caller to remove."""
    try:
        top = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        total = files = 0
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        for root, _dirs, names, rootfd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            out = dst / root
            out.mkdir(parents=True, exist_ok=True)
            if owner:
                os.chown(out, *owner)
            for name in names:
                files += 1
                if files > MAX_FILES:
                    return -1
                try:
                    fd = os.open(name, flags, dir_fd=rootfd)
                except OSError:  # a link (ELOOP), a socket, or gone meanwhile
                    continue
                with os.fdopen(fd, "rb") as fi:
                    st = os.fstat(fi.fileno())
                    if not stat.S_ISREG(st.st_mode):  # a FIFO, opened without blocking
                        continue
                    left = st.st_size  # what it held when opened; a file that grows is cut there
                    with open(out / name, "wb") as fo:
                        while left > 0:
                            chunk = fi.read(min(left, 1 << 20))
                            if not chunk:
                                break
                            fo.write(chunk)
                            left -= len(chunk)
                            total += len(chunk)
                            if total > MAX_BYTES:
                                return -1
                if owner:
                    os.chown(out / name, *owner)
        return total
    finally:
        os.close(top)


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


class Snapshot(NamedTuple):
    """The sandbox's $HOME/.cache when the clock started: a copy beside the scratch directory (None:
    there was none, or it was over the limits or unreadable), and its bytes."""

    path: Path | None
    nbytes: int


def snapshot(scratch: Path) -> Snapshot:
    """Copy the sandbox's $HOME/.cache now, while the sandbox lives (see the module's docstring), into
    the scratch directory's parent (the run directory, which the sandboxed uid cannot write). Never
    raises: a snapshot that fails keeps nothing, and the next run starts cold."""
    staging = scratch.parent / f".{scratch.name}-cache-at-clock-{os.getpid()}"
    try:
        n = _copy_tree(scratch / SUBDIR, staging)
    except Exception:  # noqa: BLE001 (whatever the sandbox did to its tree: a cold start, not a failed run)
        n = -1
    if n <= 0:
        shutil.rmtree(staging, ignore_errors=True)
        return Snapshot(None, 0)
    return Snapshot(staging, n)


def keep(scratch: Path, train_sha256: str, at_clock: Snapshot | None = None) -> int:
    """After the sandbox is dead: replace the partition with the cache as it was when the clock
    started (`at_clock`), or, when the clock never started (None), with what the run left in
    $HOME/.cache. An empty snapshot keeps nothing: the partition stays as it was."""
    try:
        if at_clock is None:
            return _keep(scratch / SUBDIR, partition(train_sha256))
        if at_clock.path is None:
            return 0
        return _keep(at_clock.path, partition(train_sha256), moved_bytes=at_clock.nbytes)
    except OSError:  # a read-only or full cache: the next run starts cold
        return 0


def _keep(src: Path, part: Path, moved_bytes: int | None = None) -> int:
    """Replace `part` with a copy of `src`; with `moved_bytes`, `src` is the harness's own finished
    copy (a snapshot) and is moved instead where it can be (the same filesystem)."""
    tmp = part.with_name(part.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    n = -1
    if moved_bytes is not None:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # another filesystem (EXDEV): copied below
            os.rename(src, tmp)
            n = moved_bytes
    if n < 0:
        n = _copy_tree(src, tmp)
    if n <= 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    shutil.rmtree(part, ignore_errors=True)
    os.replace(tmp, part)
    return n
