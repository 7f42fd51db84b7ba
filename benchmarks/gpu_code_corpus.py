"""train.py on a corpus of source code on the GPU machine: short sweeps, the 300-s runs, the loss spikes.

The GPU machine lent for benchmarks reaches no network, so climbmix cannot be downloaded there. Its
stand-in is a parquet corpus of the machine's own source files (../shared/bench/build_code_corpus.py,
served over HTTP on 127.0.0.1 and prepared through the climbmix code path). See benchmarks/README.md.

    python benchmarks/gpu_code_corpus.py harness TRAIN --seed 0 --out r.json
        `python -m harness run TRAIN --preset gpu` exactly as the loop runs it, its output read line by
        line to time the start-up and to collect the per-step losses train.py prints
    python benchmarks/gpu_code_corpus.py short TRAIN --budget 60 --seed 0 --out r.json
        the same run with the training budget replaced (only the supervisor's: see SHORT_BUDGET), for
        sweeps of tokens/s and for timing what lies outside the budget (a benchmark, not a preset:
        its val_bpb is only compared with other runs at the same budget). The scoring compiles its
        forward afresh in every run, beside the training (19-24 s cold on an H200: what it compiles
        is never kept, harness/compile_cache.py): a shorter budget makes the evaluation wait for
        it, so time the start-up at 30 s or more
    python benchmarks/gpu_code_corpus.py variant TRAIN OUT NAME=VALUE ...
        a copy of TRAIN with top-level constants replaced (what a sweep runs)
    python benchmarks/gpu_code_corpus.py plan PLAN.json --out-dir DIR
        job queues, one per GPU, run side by side (CUDA_VISIBLE_DEVICES), each job started only if its
        estimated length still fits the plan's deadline; then one results JSON and a table
    python benchmarks/gpu_code_corpus.py table RESULTS.json ...

Every result carries val_bpb, the train file's sha256, the data fingerprint, the per-step training
losses and the spike check of issue 12: after the first 10% of the steps, no loss above 2x the median
of the 50 steps before it. And the training's step rate in windows of its clock (`step_rates`): the
first ones hold the scoring's compile beside the training, the last one the rate without it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# The checkout whose harness runs: the first folder above this file that holds harness/ (this file may
# travel to the GPU machine in another folder of the checkout).
REPO = next(p for p in Path(__file__).resolve().parents if (p / "harness").is_dir())
LOSS_LINE = re.compile(r"^losses from step (\d+): ([0-9.eE+\- naif]+)$")
SPIKE_FACTOR, SPIKE_WINDOW, SPIKE_SKIP = 2.0, 50, 0.10
# Lines of a harness run's output whose arrival times split the start-up and the evaluation.
MARKS = (
    ("import_train", "[harness] importing"),  # the worker is set up (torch, data, snapshot, audit hook)
    ("train_called", "[harness] training:"),  # train.py imported, train(ctx) called
    ("warmup_done", "train.py: warm-up"),  # train.py's model build and compile warm-up done
    ("evaluating", "[harness] evaluating"),  # train(ctx) returned
)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def spike_check(losses: list[float]) -> dict:
    """Issue 12's criterion: after the first 10% of the steps, no loss above 2x the median of the 50
    steps before it. Also the largest such ratio, so a near miss shows."""
    start = max(1, math.ceil(SPIKE_SKIP * len(losses)))
    spikes, worst = [], (0.0, None)
    for i in range(start, len(losses)):
        med = statistics.median(losses[max(0, i - SPIKE_WINDOW) : i])
        ratio = losses[i] / med if med > 0 else math.inf
        if not math.isfinite(losses[i]) or ratio > worst[0]:
            worst = (ratio if math.isfinite(losses[i]) else math.inf, i)
        if not math.isfinite(losses[i]) or ratio > SPIKE_FACTOR:
            spikes.append({"step": i, "loss": losses[i], "median_before": med})
    return {
        "checked_from_step": start,
        "spikes": spikes,
        "max_ratio": round(worst[0], 3),
        "max_ratio_step": worst[1],
        "max_loss_after_start": max(losses[start:], default=None),
    }


# Windows of the training clock for step_rates: the scoring's model processes compile beside the
# training for about its first 15-20 s on an H200 (gpu preset), so the first windows show what that
# costs the training's step rate and the last one the rate without it.
RATE_WINDOWS = (0.0, 15.0, 30.0, math.inf)


def step_rates(points: list[tuple[float, int]], edges=RATE_WINDOWS) -> list[dict]:
    """Optimizer steps per second in windows of time, from (arrival time, steps done) of train.py's
    loss lines (read back about once a second: the rate is between the first and the last line of a
    window, times counted from the first line). A window with fewer than two lines is left out."""
    if not points:
        return []
    t0 = points[0][0]
    rates = []
    for lo, hi in zip(edges, edges[1:], strict=False):
        seg = [(t - t0, n) for t, n in points if lo <= t - t0 < hi]
        if len(seg) > 1 and seg[-1][0] > seg[0][0]:
            rate = (seg[-1][1] - seg[0][1]) / (seg[-1][0] - seg[0][0])
            to_s = None if math.isinf(hi) else hi
            rates.append({"from_s": lo, "to_s": to_s, "steps_per_s": round(rate, 3)})
    return rates


# ------------------------------------------------------------------------------------------------
# variant: a copy of train.py with constants replaced
# ------------------------------------------------------------------------------------------------


def make_variant(src: str, overrides: dict[str, str]) -> str:
    for name, value in overrides.items():
        pat = re.compile(rf"^{re.escape(name)} = [^#\n]*?(\s*#.*)?$", re.M)
        if len(pat.findall(src)) != 1:
            raise SystemExit(f"variant: {name} is not one top-level `NAME = value` line")
        src = pat.sub(lambda m, v=value, n=name: f"{n} = {v}{m.group(1) or ''}", src)
    return src


# ------------------------------------------------------------------------------------------------
# harness: the real run, its output timed line by line
# ------------------------------------------------------------------------------------------------


# `short` mode: the harness's own command line with the preset's training budget replaced, run by
# the same interpreter with the harness's trusted bytecode directory, so that everything outside the
# budget (set-up, sandbox, imports, compile warm-up, evaluation) is the real thing. Only the supervisor
# sees the shorter budget: inside the sandbox train.py's schedule still assumes the preset's, which
# changes nothing before the clock starts or after it ends (val_bpb of such a run means nothing).
SHORT_BUDGET = """
import dataclasses, sys
import harness.presets as presets
name = sys.argv[sys.argv.index("--preset") + 1]
presets.PRESETS[name] = dataclasses.replace(presets.PRESETS[name], budget_seconds=float(sys.argv[1]))
import os
if os.environ.get("RESCORE_OUT"):
    exec(RESCORE)
from harness.__main__ import main
sys.exit(main(sys.argv[2:]))
"""

# `short --rescore`: after the run's own scoring, the same trained weights are scored again by two
# fresh model processes with compile_scoring flipped (compiled <-> eager), and both results go to
# RESCORE_OUT: what compiling the scoring forward changes in val_bpb, with the training held fixed.
# The second scoring runs inside the run, so that run's own times outside the budget are not its own.
RESCORE = """
import dataclasses, json, shutil
import harness.scorer as sc
_start, _score, _kw = sc.start_models, sc.score, {}
def _start_models(**kw):
    _kw.update(kw)
    return _start(**kw)
def _rescore(procs, **kw):
    first = _score(procs, **kw)
    sc.stop_models(procs, kw["device"])
    for n in ("a", "b"):
        shutil.rmtree(_kw["run_dir"] / f"weights-{n}", ignore_errors=True)
    flip = dataclasses.replace(kw["preset"], compile_scoring=not kw["preset"].compile_scoring)
    again = _start(**{**_kw, "preset": flip})
    try:
        second = _score(again, **{**kw, "preset": flip})
    finally:
        sc.stop_models(again, kw["device"])
    keys = ("val_bpb", "val_loss", "eval_seconds", "eval_phases", "eval_compiled", "eval_compile_seconds",
            "probe")
    both = {"first": {k: first.get(k) for k in keys}, "second": {k: second.get(k) for k in keys}}
    with open(os.environ["RESCORE_OUT"], "w") as f:
        json.dump(both, f, indent=1)
    return first
sc.start_models, sc.score = _start_models, _rescore
"""


def run_harness(
    train_file: str,
    seed: int,
    out: str,
    preset: str = "gpu",
    budget: float | None = None,
    rescore: bool = False,
) -> dict:
    out = Path(out)
    if rescore:
        os.environ["RESCORE_OUT"] = str(out.with_suffix(".rescore.json"))
    args = ["run", str(train_file), "--preset", preset, "--out", str(out), "--seed", str(seed)]
    if budget is None:
        cmd = [sys.executable, "-m", "harness", *args]
    else:
        sys.path.insert(0, str(REPO))
        from harness.protocol import trusted_pycache_dir

        prefix = trusted_pycache_dir()  # made and written as `python -m harness` and the runners do
        os.makedirs(prefix, mode=0o755, exist_ok=True)
        code = SHORT_BUDGET.replace("exec(RESCORE)", f"exec({RESCORE!r})")
        cmd = [sys.executable, "-X", f"pycache_prefix={prefix}", "-c", code, str(budget), *args]
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    losses: dict[int, float] = {}
    arrivals: list[tuple[float, int]] = []  # (seconds after launch, steps done) per loss line
    tlog = out.with_suffix(".timed.log")
    with open(tlog, "w") as f:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        out_pipe = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        p = subprocess.Popen(cmd, cwd=REPO, env=env, **out_pipe)
        for line in p.stdout:
            t = time.monotonic() - t0
            f.write(f"{t:8.2f} {line}")
            line = line.rstrip("\n")
            for key, prefix in MARKS:
                if line.startswith(prefix) and key not in marks:
                    marks[key] = round(t, 2)
            m = LOSS_LINE.match(line)
            if m:
                first, values = int(m.group(1)), m.group(2).split()
                for i, v in enumerate(values):
                    losses[first + i] = float(v)
                arrivals.append((t, first + len(values)))
        p.wait()
    wall = time.monotonic() - t0
    res = json.loads(out.read_text())
    loss_list = [losses[i] for i in sorted(losses)]
    res["benchmark"] = {
        "mode": "harness" if budget is None else "short", "budget_s": budget,
        "command": " ".join(args if budget is None else ["<short budget>", str(budget), *args]),
        "wall_s": round(wall, 2),
        "line_times_s": marks,  # seconds after launch at which these lines appeared
        "losses": [round(v, 4) for v in loss_list], "spike_check": spike_check(loss_list),
        "step_rates": step_rates(arrivals),
        "outside_budget_s": round(res["total_seconds"] - res["training_seconds"], 2)
        if res.get("total_seconds") and res.get("training_seconds") else None,
    }  # fmt: skip
    out.write_text(json.dumps(res, indent=1))
    return res


# ------------------------------------------------------------------------------------------------
# plan: queues of jobs, one per GPU, side by side
# ------------------------------------------------------------------------------------------------


def visible_gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return 0
    return sum(1 for ln in out.splitlines() if ln.startswith("GPU "))


def run_plan(plan_file: str, out_dir: str, deadline: float | None = None) -> list[dict]:
    plan = json.loads(Path(plan_file).read_text())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    deadline = float(deadline if deadline is not None else plan["deadline_s"])
    n = visible_gpus()
    if 0 < n < len(plan["gpus"]):  # fewer GPUs than queues: deal the jobs out in turn
        queues = list(plan["gpus"].values())
        merged = [job for i in range(max(map(len, queues))) for q in queues for job in q[i : i + 1]]
        plan["gpus"] = {str(g): merged[g::n] for g in range(n)}
        print(f"plan: {n} GPU(s) visible; jobs dealt out over them", flush=True)
    results: list[dict] = []
    lock = threading.Lock()

    def queue(gpu: str, jobs: list[dict]):
        for job in jobs:
            left = deadline - (time.monotonic() - t0)
            name = job["name"]
            if job.get("est_s", 0) > left:
                print(f"[gpu {gpu}] skip {name}: needs ~{job.get('est_s')} s, {left:.0f} s left", flush=True)
                with lock:
                    results.append({"name": name, "gpu": gpu, "status": "skipped", "job": job})
                continue
            res_path = out_dir / f"{name}.json"
            log_path = out_dir / f"{name}.log"
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu, "PYTHONUNBUFFERED": "1"}
            if job.get("cold"):  # an empty compile cache of its own (harness/compile_cache.py)
                env["AUTORESEARCH_COMPILE_CACHE"] = tempfile.mkdtemp(prefix=f"compile-cache-{name}-")
            if job["kind"] == "short":
                cmd = [sys.executable, __file__, "short", job["train"], "--budget", str(job["budget"]),
                       "--seed", str(job.get("seed", 0)), "--out", str(res_path)]  # fmt: skip
            else:
                cmd = [sys.executable, __file__, "harness", job["train"], "--seed", str(job.get("seed", 0)),
                       "--out", str(res_path)]  # fmt: skip
            print(f"[gpu {gpu}] start {name} at {time.monotonic() - t0:.0f} s", flush=True)
            ts = time.monotonic()
            with open(log_path, "w") as lf:
                rc = subprocess.run(
                    cmd, cwd=REPO, env=env, stdout=lf, stderr=subprocess.STDOUT, check=False
                ).returncode
            try:
                r = json.loads(res_path.read_text())
            except (OSError, ValueError):
                tail = log_path.read_text()[-2000:] if log_path.exists() else ""
                r = {"status": "crash", "error": f"exit {rc}, no result\n{tail}"}
            r.update(name=name, gpu=gpu, job=job, process_s=round(time.monotonic() - ts, 1))
            with lock:
                results.append(r)
            print(f"[gpu {gpu}] done {name} in {r['process_s']} s: {summary_line(r)}", flush=True)

    threads = [threading.Thread(target=queue, args=(g, jobs)) for g, jobs in plan["gpus"].items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (out_dir / "results.json").write_text(json.dumps({"plan": plan, "results": results}, indent=1))
    print_table(results)
    return results


def _get(r: dict, key: str):
    if key in r:
        return r[key]
    return (r.get("benchmark") or {}).get(key)


def summary_line(r: dict) -> str:
    sc = _get(r, "spike_check") or {}
    return (f"status {r.get('status')} val_bpb {fmt(r.get('val_bpb'), '.4f')} steps {r.get('num_steps')} "
            f"tok/s {fmt(r.get('tokens_per_s') or r.get('tokens_per_second'), ',.0f')} "
            f"mfu {fmt(r.get('mfu_percent'), '.1f')} spikes {len(sc.get('spikes', []))} "
            f"max_ratio {sc.get('max_ratio')}")  # fmt: skip


def fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def print_table(results: list[dict]) -> None:
    """One row per run; startup is spawn to clock start, train.py its own warm-up (import, build,
    compile), bytecode the harness's once-per-install warm-up, outside the run's seconds outside its
    budget (total - training), steps/s the training's rate in the windows of RATE_WINDOWS."""
    from tabulate import tabulate

    cols = ("name", "status", "val_bpb", "steps", "tok/s", "mfu", "startup", "train.py", "bytecode",
            "outside", "train_s", "eval_s", "spikes", "max_ratio", "peak_MB",
            "steps/s " + "|".join(f"{lo:.0f}-" for lo in RATE_WINDOWS[:-1]))  # fmt: skip
    rows = []
    for r in results:
        sc = _get(r, "spike_check") or {}
        row = (
            r.get("name"), r.get("status"), fmt(r.get("val_bpb"), ".4f"), r.get("num_steps"),
            fmt(r.get("tokens_per_s") or r.get("tokens_per_second"), ",.0f"),
            fmt(r.get("mfu_percent"), ".1f"), fmt(r.get("startup_s") or r.get("startup_seconds"), ".1f"),
            fmt((r.get("startup_phases") or {}).get("train_py_s"), ".1f"),
            fmt(r.get("bytecode_warm_seconds"), ".1f"), fmt(_get(r, "outside_budget_s"), ".1f"),
            fmt(r.get("training_s") or r.get("training_seconds"), ".1f"),
            fmt(r.get("eval_s") or r.get("eval_seconds"), ".1f"), len(sc.get("spikes", [])),
            sc.get("max_ratio"), fmt(r.get("peak_memory_mb"), ",.0f"),
            "|".join(f"{w['steps_per_s']:.3f}" for w in _get(r, "step_rates") or []) or "n/a",
        )  # fmt: skip
        rows.append(row)
    print(tabulate(rows, headers=cols, disable_numparse=True), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("short")
    s.add_argument("train")
    s.add_argument("--budget", type=float, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--preset", default="gpu")
    s.add_argument(
        "--rescore", action="store_true", help="score the same weights again, compile_scoring flipped"
    )
    h = sub.add_parser("harness")
    h.add_argument("train")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--out", required=True)
    h.add_argument("--preset", default="gpu")
    h.add_argument("--budget", type=float, default=None, help="replace the training budget (as `short` does)")
    v = sub.add_parser("variant")
    v.add_argument("train")
    v.add_argument("out")
    v.add_argument("overrides", nargs="*", help="NAME=VALUE")
    q = sub.add_parser("plan")
    q.add_argument("plan")
    q.add_argument("--out-dir", required=True)
    q.add_argument("--deadline", type=float, default=None, help="seconds from now (default: the plan's)")
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    a = p.parse_args(argv)
    if a.cmd in ("short", "harness"):
        rescore = getattr(a, "rescore", False)
        print(summary_line(run_harness(a.train, a.seed, a.out, a.preset, a.budget, rescore)), flush=True)
    elif a.cmd == "variant":
        ov = dict(o.split("=", 1) for o in a.overrides)
        Path(a.out).write_text(make_variant(Path(a.train).read_text(), ov))
    elif a.cmd == "plan":
        run_plan(a.plan, a.out_dir, a.deadline)
    else:
        rows = []
        for f in a.files:
            d = json.loads(Path(f).read_text())
            rows += d.get("results", [d])
        print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
