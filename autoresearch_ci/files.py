"""Writing a file so that a reader sees the old bytes or the new ones, never half of either.

Every file the loop rewrites in place (resources.md, results.tsv, a repaired ledger) goes through
`write_atomically`: the new bytes go to a temporary file beside the target, are synced, and replace
the target by rename (atomic on POSIX); the directory is synced too, so the rename survives a crash.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path | str, data: str | bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
