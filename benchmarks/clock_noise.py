"""Issue 10's targets for the CPU clock: the same run, quiet and with one core taken by a spinner.

    PYTHONPATH=$PWD python3 benchmarks/clock_noise.py [--preset cpu] [--runs 5] [--seed 0]

Runs train.py `--runs` times with seed 0 on a quiet machine, then `--runs` times with one un-niced
process spinning on one core (`python3 -c 'while True: pass'`), and checks:

    |mean(val_bpb under load) - mean(quiet)| <= 0.005
    std(under load) <= max(1.5 x std(quiet), 0.003)

Prints steps, training CPU/wall seconds and val_bpb per run, the summary and the verdict; writes
benchmarks/results/clock-noise-<preset>-<date>.json. "Quiet" means nothing else runs: schedule it.
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


def one(train: str, preset: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "m.json"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        cmd = [
            sys.executable,
            "-m",
            "harness",
            "run",
            train,
            "--preset",
            preset,
            "--out",
            str(out),
            "--quiet",
            "--seed",
            str(seed),
        ]
        subprocess.run(cmd, env=env, cwd=d, capture_output=True, text=True, check=False)
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", default=str(REPO / "train.py"))
    a = ap.parse_args()
    res: dict[str, list[dict]] = {"quiet": [], "loaded": []}
    for cond in ("quiet", "loaded"):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if cond == "loaded" else None
        try:
            for i in range(a.runs):
                m = one(a.train, a.preset, a.seed)
                row = {
                    k: m.get(k)
                    for k in (
                        "status",
                        "val_bpb",
                        "num_steps",
                        "training_cpu_seconds",
                        "training_wall_seconds",
                        "total_seconds",
                        "isolation",
                        "cpu_counter",
                    )
                }
                res[cond].append(row)
                print(f"{cond} {i + 1}/{a.runs}: " + " ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        finally:
            if spinner:
                spinner.kill()
                spinner.wait()
    summary = {}
    for cond, rows in res.items():
        v = [r["val_bpb"] for r in rows if r["val_bpb"] is not None]
        s = [r["num_steps"] for r in rows if r["num_steps"] is not None]
        summary[cond] = {
            "mean": statistics.mean(v) if v else None,
            "std": statistics.stdev(v) if len(v) > 1 else 0.0,
            "steps_mean": statistics.mean(s) if s else None,
        }
    q, ld = summary["quiet"], summary["loaded"]
    ok_mean = q["mean"] is not None and ld["mean"] is not None and abs(ld["mean"] - q["mean"]) <= 0.005
    ok_std = ld["std"] <= max(1.5 * q["std"], 0.003)
    for cond, s in summary.items():
        print(f"{cond:6s}: val_bpb mean {s['mean']} std {s['std']:.5f} steps mean {s['steps_mean']}")
    print(f"target |mean_loaded - mean_quiet| <= 0.005: {'PASS' if ok_mean else 'FAIL'}")
    print(f"target std_loaded <= max(1.5 std_quiet, 0.003): {'PASS' if ok_std else 'FAIL'}")
    out = REPO / "benchmarks" / "results" / f"clock-noise-{a.preset}-{time.strftime('%Y%m%d-%H%M')}.json"
    out.write_text(
        json.dumps(
            {
                "preset": a.preset,
                "seed": a.seed,
                "runs": res,
                "summary": summary,
                "pass_mean": ok_mean,
                "pass_std": ok_std,
                "cpus": os.cpu_count(),
                "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
