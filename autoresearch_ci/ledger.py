"""The ledger: every experiment and baseline measurement, one JSON line each, append-only.

It is the single source of truth the PR comments, results.tsv, resources.md and the dashboard are
rendered from (report/ and dashboard/ read it through this class), so it must survive anything a
CI job can do to it:

- an append is one os.write() of the whole line on an O_APPEND descriptor, then fsync (and an
  fsync of the directory when the file is created). A process killed mid-append can leave at most
  one torn last line; every line written before it is intact;
- an append after a torn line starts with a newline, so the new record never fuses with the debris;
- reading never skips a bad line silently: strict reads raise LedgerCorruptError naming path:line,
  `read(strict=False)` returns the good records and the problems, and `repair()` moves bad lines
  to `<ledger>.corrupt` (with when and why) instead of dropping them.

The same id written twice is an update: readers keep the line written last, in the first one's place
(a tick that re-runs after dying half-way may append a record again).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from autoresearch_ci import baselines
from autoresearch_ci.files import fsync_dir, write_atomically
from autoresearch_ci.records import SCHEMA_VERSION, ExperimentRecord, utcnow
from autoresearch_ci.report.tables import results_tsv


@dataclass(frozen=True)
class LedgerProblem:
    path: Path
    line: int  # 1-based
    error: str
    text: str  # the raw line (without its newline)
    parsed_ok: bool = False  # the line is a valid record, only its newline is missing

    def __str__(self) -> str:
        snippet = self.text if len(self.text) <= 80 else self.text[:77] + "..."
        return f"{self.path}:{self.line}: {self.error}: {snippet!r}"


class LedgerCorruptError(RuntimeError):
    def __init__(self, problems: list[LedgerProblem]):
        self.problems = problems
        head = "\n  ".join(str(p) for p in problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        path = problems[0].path
        super().__init__(
            f"the ledger has {len(problems)} bad line(s):\n  {head}{more}\n"
            f"Nothing was changed. Inspect them (`autoresearch-ci ledger check`), then "
            f"`autoresearch-ci ledger repair` moves them to {path.name}.corrupt, with when and why, "
            "and keeps every good record."
        )


def _parse(raw: bytes) -> ExperimentRecord:
    """One line -> a record. Older schema versions parse as they are (new fields have defaults)."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ValueError(
            f"schema_version {version!r} is newer than this autoresearch-ci reads ({SCHEMA_VERSION}): upgrade"
        )
    return ExperimentRecord.model_validate(data)


def _short_error(e: Exception) -> str:
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(record)"
        more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
        return f"schema error at {loc}: {first['msg']}{more}"
    if isinstance(e, json.JSONDecodeError):
        return f"bad JSON ({e.msg} at column {e.colno})"
    if isinstance(e, UnicodeDecodeError):
        return "not UTF-8"
    return str(e)


class Ledger:
    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._cache: tuple[tuple[int, int], list[ExperimentRecord], list[LedgerProblem]] | None = None

    # -- writing -----------------------------------------------------------------------------

    def _open_locked(self) -> int:
        """An fd on the ledger holding its exclusive lock. A repair() replaces the file by rename, so
        after waiting for the lock, make sure the fd still names the file at `path`."""
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # RDWR: to peek at the tail
            fcntl.flock(fd, fcntl.LOCK_EX)  # closing the fd releases it
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def append(self, record: ExperimentRecord) -> None:
        """Durably append one record. Returns only after the line is on disk."""
        line = record.model_dump_json().encode("utf-8") + b"\n"
        assert b"\n" not in line[:-1]  # JSON escapes newlines; one record is one line
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = self._open_locked()
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # an earlier append was torn: start clean, leave the debris for repair()
            written = os.write(fd, line)  # one write: a kill leaves the whole line or a torn tail
            while written < len(line):  # a short write to a regular file means a full disk or a signal
                written += os.write(fd, line[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)
        self._cache = None

    def extend(self, records: Iterable[ExperimentRecord]) -> None:
        for r in records:
            self.append(r)

    # -- reading -----------------------------------------------------------------------------

    def read(self, strict: bool = True) -> tuple[list[ExperimentRecord], list[LedgerProblem]]:
        """(records, problems). strict: raise LedgerCorruptError when there is any problem."""
        records, problems = self._load()
        if strict and problems:
            raise LedgerCorruptError(problems)
        return list(records), list(problems)

    def _load(self) -> tuple[list[ExperimentRecord], list[LedgerProblem]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return [], []
        key = (st.st_size, st.st_mtime_ns)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        torn_tail = lines[-1] != b""  # the file does not end with a newline
        if not torn_tail:
            lines.pop()
        by_id: dict[str, ExperimentRecord] = {}
        problems: list[LedgerProblem] = []
        for i, raw in enumerate(lines, start=1):
            last = i == len(lines)
            if not raw.strip():
                continue
            text = raw.decode("utf-8", errors="replace")
            try:
                rec = _parse(raw)
            except (ValueError, ValidationError) as e:  # JSON and UTF-8 decode errors are ValueErrors
                err = _short_error(e)
                if last and torn_tail:
                    err = f"torn last line (no newline at end of file, probably an interrupted append): {err}"
                problems.append(LedgerProblem(self.path, i, err, text))
                continue
            if last and torn_tail:
                problems.append(LedgerProblem(self.path, i, "no newline at end of file", text, True))
            by_id[rec.id] = rec  # dicts keep first-insertion order; a later line replaces the content
        records = list(by_id.values())
        self._cache = (key, records, problems)
        return records, problems

    def records(self) -> list[ExperimentRecord]:
        """Every record, oldest first. Raises LedgerCorruptError on a bad line."""
        return self.read(strict=True)[0]

    def experiments(self) -> list[ExperimentRecord]:
        return [r for r in self.records() if r.kind == "experiment"]

    def baselines_for(
        self,
        commit: str,
        preset: str,
        runner: str,
        device: str | None = None,
        *,
        train_sha256: str | None = None,
    ) -> list[ExperimentRecord]:
        """Baseline measurements of `commit` (see baselines.matching)."""
        return baselines.matching(self.records(), commit, preset, runner, device, train_sha256=train_sha256)

    def baseline_groups(
        self, preset: str, runner: str, device: str | None = None, limit: int | None = baselines.NOISE_GROUPS
    ) -> dict[str, list[float]]:
        """val_bpb of the ok baseline runs, grouped by the train.py measured (see baselines.groups)."""
        return baselines.groups(self.records(), preset, runner, device, limit)

    def recent(self, n: int) -> list[ExperimentRecord]:
        """The last n experiments (not baselines), oldest first."""
        return self.experiments()[-n:] if n > 0 else []

    def best(
        self, preset: str | None = None, runner: str | None = None
    ) -> tuple[float, ExperimentRecord] | None:
        """The lowest val_bpb among kept experiments, and its record."""
        found: tuple[float, ExperimentRecord] | None = None
        for r in self.experiments():
            v = r.verdict
            if v is None or v.decision != "keep" or v.candidate_mean is None:
                continue
            if (preset and r.preset != preset) or (runner and r.runner != runner):
                continue
            if found is None or v.candidate_mean < found[0]:
                found = (v.candidate_mean, r)
        return found

    # -- maintenance ---------------------------------------------------------------------------

    def repair(self) -> list[LedgerProblem]:
        """Move every bad line to `<ledger>.corrupt` (one JSON object each: when, line, why, text),
        add a missing final newline, and rewrite the ledger with the good lines in order.

        Crash-safe: the .corrupt file is written and synced before the ledger is replaced (atomically,
        by rename), so at every instant each line exists in at least one of the two files. Appends
        wait for it (they share the lock)."""
        if not self.path.exists():
            return []
        fd = self._open_locked()
        try:
            self._cache = None
            _, problems = self._load()
            if not problems:
                return []
            bad = {p.line for p in problems if not p.parsed_ok}
            moved_at = utcnow().isoformat()
            if bad:
                payload = "".join(
                    json.dumps(
                        {
                            "moved_at": moved_at,
                            "source": str(self.path),
                            "line": p.line,
                            "problem": p.error,
                            "text": p.text,
                        }
                    )
                    + "\n"
                    for p in problems
                    if not p.parsed_ok
                ).encode("utf-8")
                cfd = os.open(
                    self.path.with_name(self.path.name + ".corrupt"),
                    os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                    0o644,
                )
                try:
                    os.write(cfd, payload)
                    os.fsync(cfd)
                finally:
                    os.close(cfd)
            lines = self.path.read_bytes().split(b"\n")
            if lines[-1] == b"":
                lines.pop()
            keep = b"".join(
                raw + b"\n" for i, raw in enumerate(lines, start=1) if i not in bad and raw.strip()
            )
            write_atomically(self.path, keep)
        finally:
            os.close(fd)
        self._cache = None
        return problems

    def recover(self) -> list[LedgerProblem]:
        """Repair only the damage an interrupted append leaves: a last line without its newline.
        The loop may call this at start-up; anything else still needs a person (strict reads raise)."""
        _, problems = self._load()
        torn_tail_only = len(problems) == 1 and not self.path.read_bytes().endswith(b"\n")
        return self.repair() if torn_tail_only else []

    # -- export ------------------------------------------------------------------------------

    def export_tsv(self, path: Path | str | None = None) -> str:
        """results.tsv of the judged experiments (see report.tables.results_tsv). Written atomically
        to `path` when given; returned either way."""
        text = results_tsv(self.experiments())
        if path is not None:
            write_atomically(path, text)
        return text
