"""Research yield of the offline loop: does it really improve train.py, and are its keeps real?

Runs the offline proposer for N iterations on the cpu preset in a fresh workspace, then re-measures
every kept experiment and its parent with fresh seeds (never used by the loop) to count false keeps:
keeps whose gain vanishes when re-run. Prints val_bpb first -> last, the keep list and the re-test.

    python benchmarks/research_yield.py --iterations 10 [--workspace DIR] [--retest-seeds 2]

Targets (issue): >= 2% better val_bpb after 10 iterations, 0 false keeps. This prints what it
measured; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
RETEST_SEED_BASE = 5000  # far from the loop's seeds (0, 1, 1000)


def sh(*cmd: str, cwd: Path | None = None) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def harness_bpb(train_py: str, preset: str, seed: int) -> float | None:
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "train.py"
        f.write_text(train_py)
        out = Path(tmp) / "m.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "harness",
                "run",
                str(f),
                "--preset",
                preset,
                "--seed",
                str(seed),
                "--out",
                str(out),
            ],
            cwd=REPO,
            capture_output=True,
            timeout=900,
        )
        m = json.loads(out.read_text())
        return m["val_bpb"] if m.get("status") == "ok" else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--workspace", default=None)
    ap.add_argument("--retest-seeds", type=int, default=2)
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args()

    ws = Path(args.workspace or tempfile.mkdtemp(prefix="yield-")) / "repo"
    if not (ws / ".git").exists():
        sh("autoresearch-ci", "init", str(ws), "--preset", args.preset)
    t0 = time.monotonic()
    subprocess.run(
        ["autoresearch-ci", "loop", "--repo", str(ws), "--iterations", str(args.iterations)], check=True
    )
    loop_seconds = time.monotonic() - t0

    from autoresearch_ci.ledger import Ledger

    ledger = Ledger(ws / "ledger" / "experiments.jsonl")
    records = ledger.records()
    baselines = [r for r in records if r.kind == "baseline"]
    exps = [r for r in records if r.kind == "experiment"]
    first = statistics.fmean(baselines[0].ok_values())
    kept = [r for r in exps if r.verdict and r.verdict.decision == "keep"]
    last = statistics.fmean(kept[-1].ok_values()) if kept else first

    rows, false_keeps = [], 0
    for r in kept:
        parent_py = sh("git", "show", f"{r.parent_commit}:train.py", cwd=ws)
        child_py = sh("git", "show", f"{r.candidate_commit}:train.py", cwd=ws)
        seeds = [RETEST_SEED_BASE + k for k in range(args.retest_seeds)]
        p = [harness_bpb(parent_py, args.preset, s) for s in seeds]
        c = [harness_bpb(child_py, args.preset, s) for s in seeds]
        p_ok, c_ok = [x for x in p if x is not None], [x for x in c if x is not None]
        holds = bool(p_ok and c_ok and statistics.fmean(c_ok) < statistics.fmean(p_ok))
        false_keeps += 0 if holds else 1
        rows.append(
            [
                r.id,
                r.hypothesis[:60],
                f"{r.verdict.delta:+.4f}",
                f"{statistics.fmean(c_ok) - statistics.fmean(p_ok):+.4f}" if p_ok and c_ok else "n/a",
                "yes" if holds else "NO",
            ]
        )

    decisions: dict[str, int] = {}
    for r in exps:
        d = r.verdict.decision if r.verdict else "?"
        decisions[d] = decisions.get(d, 0) + 1
    print()
    print(tabulate(rows, headers=["kept", "hypothesis", "delta (loop)", "delta (re-test)", "holds"]))
    summary = {
        "iterations": args.iterations,
        "preset": args.preset,
        "loop_seconds": round(loop_seconds, 1),
        "seconds_per_iteration": round(loop_seconds / max(1, args.iterations), 1),
        "val_bpb_first": round(first, 5),
        "val_bpb_last": round(last, 5),
        "improvement_percent": round(100 * (first - last) / first, 2),
        "decisions": decisions,
        "kept": len(kept),
        "false_keeps": false_keeps,
        "retest_seeds": args.retest_seeds,
        "workspace": str(ws),
    }
    print()
    print(tabulate(summary.items(), headers=["figure", "value"]))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
