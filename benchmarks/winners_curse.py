"""What the new base should be paired on after a keep: a simulation of the whole loop.

A kept candidate's runs on seeds 0..k-1 were selected for being low: it was kept because its
differences to the base came out negative, partly by luck. Three ways to go on, once it is the base:

    reuse       its runs are the new base's values on those seeds (no run spent)
    remeasure   the new base runs again on the same seeds (fresh run noise, the same code x seed part)
    fresh       the new base and its candidates move to a new block of seeds (nothing selected survives)

The model is the judge's (verdict.py): val_bpb = mu_c + a_s + b_cs + e, with a_s shared by every
train.py on seed s, b_cs fixed per (train.py, seed) (a re-run on the same seed has the same b) and
e new on every run; sigma_d^2 = 2 sigma_int^2 + 2 sigma_run^2. Each iteration proposes one change
with a true effect drawn from a mixture (most do nothing or harm, some help), runs the judge's rule
(verdict.classify, noise.paired_noise, the looks of a runner with two slots) and pays ceil(runs / 2)
rounds. After N iterations: the true improvement, keeps, false keeps (a keep whose true effect is
not negative), rounds per iteration.

    python benchmarks/winners_curse.py [--loops 300] [--iterations 10]

The selection a keep leaves behind only ever makes the next candidates look worse (it is a bias
against them, never a false keep); what it costs is power, against a round of runs per keep.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autoresearch_ci.config import JudgeConfig  # noqa: E402
from autoresearch_ci.noise import paired_noise  # noqa: E402
from autoresearch_ci.verdict import KEEP, MORE, classify, looks  # noqa: E402

SLOTS = 2
NOISE_BLOCKS = 20


def effect(rng: np.random.Generator, sigma_d: float) -> float:
    """A proposal's true effect: 60% do nothing or harm (mean +0.5 sigma_d), 40% help by 0-3 sigma_d."""
    if rng.random() < 0.6:
        return float(rng.normal(0.5, 0.5)) * sigma_d
    return -float(rng.uniform(0.0, 3.0)) * sigma_d


def one_loop(i: int, jc, policy: str, iterations: int, sigma_d: float, seed_sigma: float, int_share: float):
    """Loop number i: its proposals (and seed effects) are the same under every policy, so the
    policies are compared on common random numbers, as the judge compares a candidate and its base."""
    proposals = np.random.default_rng(i)
    rng = np.random.default_rng(10**6 + i)
    seed_effects = np.random.default_rng(2 * 10**6 + i)
    s_int = math.sqrt(int_share / 2) * sigma_d
    s_run = math.sqrt((1 - int_share) / 2) * sigma_d
    a: dict[int, float] = {}

    class Code:
        def __init__(self, mu: float):
            self.mu, self.b = mu, {}

        def run(self, s: int) -> float:
            if s not in a:
                a[s] = float(seed_effects.normal(0, seed_sigma))
            if s not in self.b:
                self.b[s] = float(rng.normal(0, s_int))
            return self.mu + a[s] + self.b[s] + float(rng.normal(0, s_run))

    base, seed0 = Code(0.0), 0
    base_vals: dict[int, float] = {}
    blocks: list[list[dict[int, float]]] = []
    rows: list[dict[int, float]] = []  # the current block's candidates
    rounds = keeps = false = 0
    schedule = looks(jc, SLOTS)
    for _ in range(iterations):
        delta = effect(proposals, sigma_d)
        cand, vals = Code(base.mu + delta), {}
        kept = False
        for k in schedule:
            seeds = [seed0 + i for i in range(k)]
            n = 0
            for s in seeds:
                if s not in base_vals:
                    base_vals[s], n = base.run(s), n + 1
                if s not in vals:
                    vals[s], n = cand.run(s), n + 1
            rounds += math.ceil(n / SLOTS)
            est = paired_noise([*blocks[-(NOISE_BLOCKS - 1) :], [base_vals, *rows, vals]])
            d = [vals[s] - base_vals[s] for s in seeds]
            own = float(np.std(d, ddof=1)) if k >= 2 else None
            what = classify(float(np.mean(d)), est.sigma, k, est.dof, jc, own)
            if what == KEEP:
                kept = True
            if what != MORE:
                break
        rows.append(vals)
        if kept:
            keeps, false = keeps + 1, false + (delta >= 0)
            blocks.append([base_vals, *rows])
            rows = []
            base = cand
            if policy == "reuse":
                base_vals = dict(vals)
            elif policy == "remeasure":
                base_vals = {}
                for s in list(vals):
                    base_vals[s] = base.run(s)
                rounds += math.ceil(len(vals) / SLOTS)
            else:  # fresh
                base_vals, seed0 = {}, seed0 + 100
    return -base.mu / sigma_d, keeps, false, rounds / iterations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loops", type=int, default=300)
    ap.add_argument("--iterations", type=int, default=10)
    args = ap.parse_args()
    jc = JudgeConfig()
    sigma_d = 10 * jc.min_effect
    print(f"{args.loops} loops of {args.iterations} iterations each; gains in units of sigma_d; two slots")
    print(
        "interaction share: the part of sigma_d^2 that a re-run on the same seed keeps; vs reuse: the\n"
        "paired difference in true gain per loop (± its standard error); per round: true gain / rounds\n"
    )
    print("share  policy     true gain  vs reuse        keeps  false keeps  rounds/iter  gain per round")
    for share in (0.2, 0.5, 0.8):
        runs = {}
        for policy in ("reuse", "remeasure", "fresh"):
            runs[policy] = np.array(
                [
                    one_loop(i, jc, policy, args.iterations, sigma_d, 3 * sigma_d, share)
                    for i in range(args.loops)
                ]
            )
        for policy, res in runs.items():
            g, k, f, r = res.mean(axis=0)
            d = res[:, 0] - runs["reuse"][:, 0]
            vs = (
                f"{d.mean():+5.2f} ±{d.std(ddof=1) / math.sqrt(len(d)):.2f}"
                if policy != "reuse"
                else "      -    "
            )
            per = g / (r * args.iterations)
            print(f"{share:5.1f}  {policy:9s}  {g:9.2f}  {vs}  {k:5.2f}  {f:11.3f}  {r:11.2f}  {per:14.3f}")


if __name__ == "__main__":
    main()
