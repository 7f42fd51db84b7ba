"""Which thread policy makes a CPU-second buy the same training under load: steps per CPU-second.

    PYTHONPATH=$PWD python3 benchmarks/thread_policy.py [--steps 20]

For each policy (1 thread; 2 threads with OMP_WAIT_POLICY=PASSIVE; 2 threads with the default
policy), quiet and with one un-niced process spinning on one core, it runs train.py's CPU model for a
fixed number of optimizer steps on random tokens in a fresh process and reports steps per CPU-second
(what the cpu preset's clock buys) and per wall-second. A policy is fit for the CPU clock when its
steps per CPU-second under load stay close to the quiet figure. Writes
benchmarks/results/thread-policy-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POLICIES = {
    "1 thread": {"threads": 1, "env": {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}},
    "2 threads, passive": {"threads": 2, "env": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}},
    "2 threads, default": {"threads": 2, "env": {"OMP_NUM_THREADS": "2"}},
}
CHILD = """
import importlib.util, json, sys, time, torch
threads, steps = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
spec = importlib.util.spec_from_file_location("t", sys.argv[3]); t = importlib.util.module_from_spec(spec)
spec.loader.exec_module(t)
class C: device, seq_len, vocab_size = "cpu", 256, 4096
model = t.build_model(C)
depth, dim, head_dim, b, total = t.model_sizes(C)
opts = t.build_optimizers(model, dim, torch.device("cpu"))
g = torch.Generator().manual_seed(0)
def step():
    x = torch.randint(0, 4096, (b, 257), generator=g)
    model(x[:, :-1], x[:, 1:]).backward()
    for o in opts: o.step()
    model.zero_grad(set_to_none=True)
step()
c0, w0 = time.process_time(), time.perf_counter()
for _ in range(steps): step()
print(json.dumps({"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0}))
"""


def measure(policy: dict, steps: int) -> dict:
    env = dict(os.environ, **policy["env"])
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(policy["threads"]), str(steps), str(REPO / "train.py")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return {"steps_per_cpu_s": steps / r["cpu"], "steps_per_wall_s": steps / r["wall"], **r}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    res = {}
    for cond in ("quiet", "one spinning core"):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if cond != "quiet" else None
        try:
            for name, pol in POLICIES.items():
                r = measure(pol, a.steps)
                res[f"{name} | {cond}"] = r
                print(
                    f"{name:20s} {cond:18s} steps/CPU-s {r['steps_per_cpu_s']:6.2f}  "
                    f"steps/wall-s {r['steps_per_wall_s']:6.2f}",
                    flush=True,
                )
        finally:
            if spinner:
                spinner.kill()
                spinner.wait()
    out = REPO / "benchmarks" / "results" / f"thread-policy-{time.strftime('%Y%m%d-%H%M')}.json"
    out.write_text(
        json.dumps(
            {"steps": a.steps, "results": res, "cpus": os.cpu_count(), "loadavg": os.getloadavg()}, indent=1
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
