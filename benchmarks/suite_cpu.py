"""Where the test suite's CPU time goes, test by test: every process charged to the test that ran it.

    python benchmarks/suite_cpu.py -- python -m pytest -n 2 --dist loadgroup -q

Runs the command and samples /proc (every --interval s) for every process on the machine that
descends from it. A process is charged to the test named in the PYTEST_CURRENT_TEST of the nearest
ancestor whose starting environment holds it: pytest sets it before each test, and every subprocess
a test starts (the harness's supervisor, the CLI steps) inherits it. The sandboxed processes get a
clean environment, so they are charged through their supervisor. The pytest workers' own CPU is not
a test's (their starting environment predates every test) and shows as "(pytest and the rest)".

Sampling misses what lives less than an interval, and the sampler itself costs CPU (reading every
process's stat each interval): read the table as proportions. It found the suite's costliest fixture
(issue 13: the loop fixture's ten real training runs). Nothing gates on it.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time

from run_cpu import proc_cmdline, proc_stat  # beside this file
from tabulate import tabulate

KINDS = (
    ("harness.modelproc", "model process"),
    ("harness.worker", "worker"),
    ("-m harness run", "supervisor"),
    ("autoresearch_ci.cli", "CLI step"),
)


def _test_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return None
    for item in environ.split(b"\0"):
        if item.startswith(b"PYTEST_CURRENT_TEST="):
            return item.split(b"=", 1)[1].decode(errors="replace").rsplit(" (", 1)[0]
    return None


def _kind(cmdline: str) -> str:
    return next((kind for needle, kind in KINDS if needle in cmdline), "other")


def watch(argv: list[str], interval: float) -> tuple[int, dict[int, list]]:
    """(exit code, {pid: [parent, CPU seconds, test or None, kind]}) for the command's process tree."""
    p = subprocess.Popen(argv)
    procs: dict[int, list] = {}
    tree = {p.pid}
    while p.poll() is None:
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            pid = int(d)
            st = proc_stat(pid)
            if st is None:
                continue
            if pid not in procs:
                if st[0] not in tree and pid != p.pid:
                    continue
                tree.add(pid)
                procs[pid] = [st[0], st[1], _test_of(pid), _kind(proc_cmdline(pid))]
            else:
                procs[pid][1] = st[1]
        time.sleep(interval)
    return p.returncode, procs


def charge(procs: dict[int, list]) -> dict[str, collections.Counter]:
    """{test: Counter(kind -> CPU seconds)}; a process goes to its nearest ancestor's test."""

    def owner(pid: int) -> str:
        for _ in range(64):
            if pid not in procs:
                break
            if procs[pid][2]:
                return procs[pid][2]
            pid = procs[pid][0]
        return "(pytest and the rest)"

    out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for pid, (_, cpu, _, kind) in procs.items():
        out[owner(pid)][kind] += cpu
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    argv = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not argv:
        ap.error("give the command after --")
    rc, procs = watch(argv, a.interval)
    per_test = charge(procs)
    kinds = [kind for _, kind in KINDS] + ["other"]
    rows = sorted(per_test.items(), key=lambda kv: -sum(kv[1].values()))
    table = [[round(sum(c.values()), 1), test, *(round(c[k], 1) for k in kinds)] for test, c in rows[: a.top]]
    print(tabulate(table, headers=["CPU-s", "test", *kinds]))
    files: collections.Counter = collections.Counter()
    for test, c in per_test.items():
        files[test.split("::")[0]] += sum(c.values())
    print()
    print(tabulate([[round(v, 1), f] for f, v in files.most_common()], headers=["CPU-s", "test file"]))
    print(f"\ntotal {sum(files.values()):.1f} CPU-s in {len(procs)} processes, exit {rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
