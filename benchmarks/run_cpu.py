"""Where one harness run's CPU time goes, process by process.

    python benchmarks/run_cpu.py -- python -m harness run train.py --preset tiny --out m.json --quiet

Runs the command and samples /proc every 20 ms for it and all its descendants (the supervisor, the
bubblewrap sandboxes, the worker and the model processes): the CPU seconds each used (its last
sample, so a process that lived less than a sample's interval is missed) and the total. It made the
test suite's cost visible (issue 13): a tiny run's sandboxed interpreters compiling torch._dynamo and
sympy from source in every process. Numbers depend on the machine; nothing gates on them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from tabulate import tabulate

TICK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int | str) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def proc_cmdline(pid: int | str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def watch(argv: list[str], interval: float = 0.02) -> tuple[int, dict[int, tuple[float, str]], float]:
    """(exit code, {pid: (CPU seconds, command line)} of the command's tree, wall seconds)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv)
    tree = {p.pid}
    seen: dict[int, tuple[float, str]] = {}
    while p.poll() is None:
        stats = {int(d): s for d in os.listdir("/proc") if d.isdigit() and (s := proc_stat(d))}
        grew = True
        while grew:  # children first seen in this sample may have children of their own
            grew = False
            for pid, (ppid, _) in stats.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        for pid in tree & stats.keys():
            cmd = seen[pid][1] if pid in seen else proc_cmdline(pid)
            seen[pid] = (stats[pid][1], cmd)
        time.sleep(interval)
    return p.returncode, seen, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    ap.add_argument("--min", type=float, default=0.05, help="list processes with at least this many CPU-s")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command to measure after --")
    rc, seen, wall = watch(cmd)
    rows = [(f"{cpu:.2f}", pid, c[:100]) for pid, (cpu, c) in sorted(seen.items(), key=lambda kv: -kv[1][0])]
    print(tabulate([r for r in rows if float(r[0]) >= args.min], headers=["CPU-s", "pid", "command"]))
    total = sum(cpu for cpu, _ in seen.values())
    print(f"total {total:.2f} CPU-s in {len(seen)} processes, {wall:.1f} s wall, exit {rc}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
