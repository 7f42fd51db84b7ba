"""The cost of isolation: seconds a harness run spends beyond training, with the sandbox and without.

    PYTHONPATH=$PWD python3 benchmarks/isolation_overhead.py [--preset cpu] [--runs 2] [--device cpu]

Runs the same train.py (the repo's, or --train) with `isolation: bwrap` and with
AUTORESEARCH_TEST_ISOLATION_NONE=1 (plain processes), alternating, and compares what metrics.json
accounts: total seconds, start-up (spawn to clock start), evaluation (both model processes, twins
included) and the rest (hashing, save, kill). The training itself costs the same budget on both.
Prints a table and writes benchmarks/results/isolation-<preset>-<date>.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = (
    "total_seconds",
    "startup_seconds",
    "training_seconds",
    "training_wall_seconds",
    "eval_seconds",
    "eval_startup_seconds",
    "verify_seconds",
    "handback_seconds",
)


def one(train: Path, preset: str, device: str, none: bool) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "m.json"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        if none:
            env["AUTORESEARCH_TEST_ISOLATION_NONE"] = "1"
        cmd = [
            sys.executable,
            "-m",
            "harness",
            "run",
            str(train),
            "--preset",
            preset,
            "--out",
            str(out),
            "--quiet",
            "--device",
            device,
        ]
        subprocess.run(cmd, env=env, cwd=d, capture_output=True, text=True, check=False)
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--train", default=str(REPO / "train.py"))
    a = ap.parse_args()
    rows: dict[str, list[dict]] = {"bwrap": [], "none": []}
    for i in range(a.runs):
        for mode in ("bwrap", "none"):
            m = one(Path(a.train), a.preset, a.device, mode == "none")
            print(
                f"run {i + 1}/{a.runs} {mode:5s}: status {m['status']} isolation {m.get('isolation')} "
                + " ".join(f"{k} {m.get(k)}" for k in KEYS),
                flush=True,
            )
            rows[mode].append(m)
    table = {}
    for k in KEYS:
        vals = {mode: [r[k] for r in rs if isinstance(r.get(k), int | float)] for mode, rs in rows.items()}
        mean = {mode: statistics.mean(v) if v else None for mode, v in vals.items()}
        diff = mean["bwrap"] - mean["none"] if None not in mean.values() else None
        table[k] = {"bwrap": mean["bwrap"], "none": mean["none"], "added_by_bwrap": diff}
    print(f"\n{'seconds (mean)':24s} {'bwrap':>8s} {'none':>8s} {'added':>8s}")
    for k, v in table.items():
        f = lambda x: f"{x:8.2f}" if isinstance(x, int | float) else f"{'n/a':>8s}"  # noqa: E731
        print(f"{k:24s} {f(v['bwrap'])} {f(v['none'])} {f(v['added_by_bwrap'])}")
    res = {
        "preset": a.preset,
        "device": a.device,
        "runs": a.runs,
        "train": a.train,
        "table": table,
        "statuses": {m: [r["status"] for r in rs] for m, rs in rows.items()},
        "loadavg_at_end": os.getloadavg(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    stamp = time.strftime("%Y%m%d-%H%M")
    out = REPO / "benchmarks" / "results" / f"isolation-{a.preset}-{a.device}-{stamp}.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
