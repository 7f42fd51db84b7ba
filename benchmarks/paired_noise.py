"""How much of val_bpb's spread pairing removes: a few train.py variants on the same seeds.

Runs this checkout's train.py and three one-constant variants of it on seeds 0..N-1, plus repeats
of seed 0, and splits the spread the way the judge's model does (verdict.py):

    seed effect    a_s: what a seed does to every train.py (std of the per-seed means)
    sigma_d        std of one paired difference: the two-way fit of noise.paired_noise
    run noise      std of repeated runs of one train.py on one seed (what a re-run changes)

    python benchmarks/paired_noise.py --preset cpu --seeds 6 --repeats 2 --json out.json
    python benchmarks/paired_noise.py --from-dir DIR --json out.json   # analyse runs already made

It prints and writes what it measured; it asserts nothing. --from-dir reads CODE-SEED-REPEAT.json
metrics files (the harness's metrics.json), as this script saves them under --keep-dir.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {  # name: (constant, new value), each a plausible offline-proposer edit
    "mlr": ("MATRIX_LR", "0.056"),
    "batch": ("CPU_TOTAL_BATCH", "2**11"),
    "wd": ("WARMDOWN_RATIO", "0.3"),
}


def variant(src: str, name: str, value: str) -> str:
    out, n = re.subn(rf"^{name} = [^#\n]*?(\s*#|$)", rf"{name} = {value}\1", src, count=1, flags=re.M)
    if n != 1:
        raise SystemExit(f"train.py has no top-level {name}: update VARIANTS")
    return out


def analyse(values: dict[str, dict[tuple[int, int], float]]) -> dict:
    from autoresearch_ci.noise import paired_noise

    first = {c: {s: v for (s, r), v in vals.items() if r == 0} for c, vals in values.items()}
    seeds = sorted(set.intersection(*(set(x) for x in first.values())))
    codes = list(first)
    est = paired_noise([[{s: first[c][s] for s in seeds} for c in codes]])
    seed_means = [statistics.fmean(first[c][s] for c in codes) for s in seeds]
    reps = {c: [v for (s, _), v in sorted(vals.items()) if s == 0] for c, vals in values.items()}
    ss = sum(sum((x - statistics.fmean(v)) ** 2 for x in v) for v in reps.values() if len(v) > 1)
    dof = sum(len(v) - 1 for v in reps.values() if len(v) > 1)
    base = codes[0]
    pairs = {}
    for c in codes[1:]:
        d = [first[c][s] - first[base][s] for s in seeds]
        pairs[c] = {
            "deltas": [round(x, 5) for x in d],
            "mean": round(statistics.fmean(d), 5),
            "sd": round(statistics.stdev(d), 5),
        }
    return {
        "codes": codes,
        "seeds": seeds,
        "values": {c: {str(s): round(first[c][s], 5) for s in seeds} for c in codes},
        "seed_effect_std": round(statistics.stdev(seed_means), 5),
        "within_code_across_seed_std": {
            c: round(statistics.stdev(first[c][s] for s in seeds), 5) for c in codes
        },
        "sigma_d": round(est.sigma, 5),
        "sigma_d_dof": est.dof,
        "paired_vs_base": pairs,
        "seed0_repeats": {c: [round(x, 5) for x in v] for c, v in reps.items()},
        "run_noise_std": round(math.sqrt(ss / dof), 5) if dof else None,
        "run_noise_dof": dof,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2, help="extra runs of seed 0 of each train.py")
    ap.add_argument("--from-dir", default=None)
    ap.add_argument("--keep-dir", default=None, help="save every metrics.json here")
    ap.add_argument("--json", default=None)
    ap.add_argument("--note", default="", help="recorded in the JSON: the machine, its load, the harness")
    args = ap.parse_args()

    values: dict[str, dict[tuple[int, int], float]] = {}
    meta: dict = {}
    if args.from_dir:
        for f in sorted(Path(args.from_dir).glob("*-*-*.json")):
            c, s, r = f.stem.split("-")
            m = json.loads(f.read_text())
            meta.setdefault("harness_sha256", m.get("harness_sha256"))
            meta.setdefault("clock", m.get("clock"))
            if m.get("status") == "ok":
                values.setdefault(c, {})[(int(s), int(r))] = m["val_bpb"]
        order = ["base", *VARIANTS]
        values = {c: values[c] for c in order if c in values}
    else:
        from autoresearch_ci.records import RunRequest
        from autoresearch_ci.runners.local import LocalRunner

        src = (REPO / "train.py").read_text(encoding="utf-8")
        codes = {"base": src} | {k: variant(src, *v) for k, v in VARIANTS.items()}
        jobs = [(c, s, 0) for s in range(args.seeds) for c in codes]
        jobs += [(c, 0, r) for r in range(1, args.repeats + 1) for c in codes]
        reqs = [
            RunRequest(experiment_id=f"{c}-{s}-{r}", role="candidate", commit=c, train_py=codes[c],
                       preset=args.preset, seed=s)
            for c, s, r in jobs
        ]  # fmt: skip
        runner = LocalRunner(REPO)
        print(f"{len(reqs)} runs, {runner.slots(args.preset)} at a time", flush=True)
        for o in runner.run_many(reqs):
            c, s, r = o.request.experiment_id.split("-")
            m = o.metrics
            print(
                f"{c} seed {s} repeat {r}: {m.status if m else o.infra_error}"
                + (f" {m.val_bpb:.4f} ({m.num_steps} steps)" if m and m.val_bpb else ""),
                flush=True,
            )
            if m is not None and m.status == "ok":
                values.setdefault(c, {})[(int(s), int(r))] = m.val_bpb
                meta.setdefault("harness_sha256", m.harness_sha256)
                meta.setdefault("clock", getattr(m, "clock", None))
                if args.keep_dir:
                    Path(args.keep_dir).mkdir(parents=True, exist_ok=True)
                    Path(args.keep_dir, f"{c}-{s}-{r}.json").write_text(m.model_dump_json())
    out = {"preset": args.preset, "note": args.note, **meta, **analyse(values)}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
