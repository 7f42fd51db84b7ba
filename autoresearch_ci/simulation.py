"""The judge's error rates, measured rather than argued: synthetic candidates through verdict.py's rule.

verdict.py is the rule, pure and read on every tick; this is the Monte Carlo that says how often that
rule keeps a change with no effect and how often it finds a real one, with the noise estimate
included (the two-way fit of noise.residual_operator, as the judge computes it). It runs the rule's
own `classify` and `looks`, so the rates are the product's, not a model of it; tests/test_judge.py
holds the rule to them.

Error rates, measured with `simulate()` (100,000 synthetic candidates per cell, default settings,
sigma_d = 10 x min_effect so the noise term decides; "prior dof": the estimate's dof before this
candidate's own runs, from earlier candidates on 2 seeds, 5 per base): kept per candidate, by true
gain in units of sigma_d, and the pairs (candidate runs) a no-effect candidate costs on average.

    one run at a time, or billed per run (looks after 1, 2, 3, 4 pairs)
    prior dof   no effect   1 sigma_d   2 sigma_d   3 sigma_d   pairs (no effect)
            0       1.51%      12.68%      39.98%      71.43%     2.00
            1       1.49%      15.67%      54.21%      87.40%     1.75
            2       1.33%      17.41%      63.39%      93.86%     1.72
            5       1.04%      21.22%      75.79%      98.27%     1.68
           10       0.87%      23.55%      81.11%      98.96%     1.67
           20       0.82%      25.04%      83.50%      99.11%     1.66
           50       0.83%      25.98%      85.04%      99.11%     1.66

    two or more slots of its own (looks after 2 and 4 pairs)
    prior dof   no effect   1 sigma_d   2 sigma_d   3 sigma_d   pairs (no effect)
            0       1.14%      10.92%      37.36%      69.65%     2.69
            1       1.21%      14.03%      52.17%      86.62%     2.65
            2       0.99%      15.70%      61.81%      93.58%     2.65
            5       0.84%      20.08%      76.15%      98.71%     2.63
           10       0.69%      22.81%      82.56%      99.47%     2.63
           20       0.66%      24.59%      85.47%      99.59%     2.62
           50       0.68%      25.70%      87.14%      99.65%     2.62

The seed-to-seed spread does not enter: the same table comes out with sigma_seed = 0, 1 or
10 x sigma_d (a_s cancels in every difference and in the fit). What does enter is a candidate whose
effect swings with the seed more than the others' (its own sigma_d larger than the pool's; measured
on the cpu preset: MATRIX_LR x1.4 had 2.5x the sigma_d of two other one-constant changes). The pooled
bar alone would keep 10% of such no-effect changes at 2x; the own-seeds guard (own_agrees: the
candidate's own paired t-test must agree at own_z = 1.645) halves that, for 2-4 points of power:

    no effect, 20 prior dof, the candidate's own sigma_d / the pool's
         looks        1.0x        1.5x        2.0x        3.0x
    1, 2, 3, 4       0.80%       3.30%       5.64%       7.99%
          2, 4       0.65%       2.90%       4.89%       6.78%

Reproduce: python -m autoresearch_ci.simulation --simulate 100000
(`python -m autoresearch_ci.verdict --simulate 100000`, the command earlier versions cite, runs this.)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from autoresearch_ci.noise import residual_operator
from autoresearch_ci.verdict import KEEP, MORE, _judge_cfg, classify, looks

if TYPE_CHECKING:
    from autoresearch_ci.config import Config, JudgeConfig


def prior_layout(prior_dof: int, per_base: int = 5) -> tuple[int, int]:
    """(earlier bases, earlier candidates on the current base) whose 2-seed rows give prior_dof."""
    current = min(prior_dof, per_base)
    return math.ceil((prior_dof - current) / per_base), current


def simulate(
    cfg: Config | JudgeConfig,
    *,
    effect: float,
    sigma: float,
    experiments: int = 2000,
    prior_dof: int = 10,
    parallel: int | None = 1,
    seed_sigma: float = 0.0,
    spread: float = 1.0,
    seed: int = 0,
) -> dict[str, float]:
    """Run `experiments` synthetic candidates through the rule, noise estimate included.

    Per experiment: val_bpb = effect (candidate only) + a_s + w, with a_s ~ N(0, seed_sigma) shared
    by every train.py on seed s and w ~ N(0, sigma / sqrt(2)) per (train.py, seed), so one paired
    difference has std `sigma` (sigma_d). The noise is estimated as the judge does (the two-way fit
    of noise.residual_operator): from earlier candidates on 2 seeds each, 5 per base, adding up to
    `prior_dof` (prior_layout; the newest base is this candidate's, shared with up to 5 of them),
    plus this candidate's own runs and its base's at each look. The candidate then runs the looks
    of verdict.looks(parallel) through classify(). `spread`: this candidate's own sigma_d over
    everyone else's (1: the pool's assumption; 2: a change whose effect swings with the seed).
    Returns the keep rate and the mean pairs run."""
    import numpy as np

    jc = _judge_cfg(cfg)
    rng = np.random.default_rng(seed)
    n, kmax = experiments, jc.max_pairs
    w = sigma / math.sqrt(2)
    old_bases, current = prior_layout(prior_dof)
    a = rng.normal(0.0, seed_sigma, (n, 1, kmax))
    # earlier bases: their rows (base + 5 candidates) on seeds 0 and 1; only the fit's residual matters
    ss_old = np.zeros(n)
    dof_old = 0
    if old_bases:
        rows = prior_dof - current
        sizes = [min(5, rows - 5 * i) for i in range(old_bases)]
        for size in sizes:
            layout = ((0, 1),) * (size + 1)
            m, d = residual_operator(layout)
            x = (a[:, :, :2] + rng.normal(0.0, w, (n, size + 1, 2))).reshape(n, -1)
            ss_old += np.einsum("ei,ij,ej->e", x, m, x)
            dof_old += d
    # the current block: row 0 the base, then `current` earlier candidates (2 seeds), then this one
    x = a + rng.normal(0.0, w, (n, current + 2, kmax))
    # this candidate's own part: var(d) = w^2 (the base's) + its own, (2 spread^2 - 1) w^2
    x[:, -1, :] = a[:, 0, :] + effect + rng.normal(0.0, w * math.sqrt(2 * spread**2 - 1), (n, kmax))
    alive = np.ones(n, bool)
    keep = np.zeros(n, bool)
    pairs = np.zeros(n)
    for k in looks(jc, parallel):
        layout = (tuple(range(max(2, k))),) + ((0, 1),) * current + (tuple(range(k)),)
        m, d = residual_operator(layout)
        cells = np.concatenate([x[:, r, list(seeds)] for r, seeds in enumerate(layout)], axis=1)
        ss = ss_old + np.einsum("ei,ij,ej->e", cells, m, cells)
        dof = dof_old + d
        est = np.sqrt(2 * ss / dof) if dof else np.zeros(n)
        d = x[:, -1, :k] - x[:, 0, :k]
        own = d.std(axis=1, ddof=1) if k >= 2 else None
        what = classify(d.mean(axis=1), est, k, dof, jc, own)
        pairs = np.where(alive, k, pairs)
        keep |= alive & (what == KEEP)
        alive &= what == MORE
    return {"keep_rate": float(keep.mean()), "pairs": float(pairs.mean())}


EFFECTS = (0.0, 1.0, 2.0, 3.0)  # true gains, in units of sigma_d
PRIOR_DOFS = (0, 1, 2, 5, 10, 20, 50)


def table(jc: JudgeConfig, parallel: int | None, experiments: int, seed_sigma: float = 0.0) -> list[str]:
    """The rows of the docstring's tables: prior dof, keep rate per gain, pairs for no effect."""
    sigma = 10 * jc.min_effect if jc.min_effect else 0.01
    out = []
    for i, dof in enumerate(PRIOR_DOFS):
        cells, pairs = [], 0.0
        for j, eff in enumerate(EFFECTS):
            r = simulate(
                jc,
                effect=-eff * sigma,
                sigma=sigma,
                experiments=experiments,
                prior_dof=dof,
                parallel=parallel,
                seed_sigma=seed_sigma * sigma,
                seed=1000 * i + j,
            )
            cells.append(f"{r['keep_rate']:9.2%}")
            pairs = pairs or r["pairs"]
        out.append(f"{dof:9d}   " + "   ".join(cells) + f"   {pairs:6.2f}")
    return out


SPREADS = (1.0, 1.5, 2.0, 3.0)


def spread_table(jc: JudgeConfig, experiments: int, prior_dof: int = 20) -> list[str]:
    """No-effect candidates whose own sigma_d is `spread` x the pool's: kept per candidate."""
    sigma = 10 * jc.min_effect if jc.min_effect else 0.01
    out = []
    for parallel in (1, 2):
        cells = [
            simulate(
                jc,
                effect=0.0,
                sigma=sigma,
                experiments=experiments,
                prior_dof=prior_dof,
                parallel=parallel,
                spread=r,
                seed=7000 + 10 * parallel + i,
            )["keep_rate"]
            for i, r in enumerate(SPREADS)
        ]
        out.append(
            f"{', '.join(map(str, looks(jc, parallel))):>10}   " + "   ".join(f"{c:9.2%}" for c in cells)
        )
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    from autoresearch_ci.config import JudgeConfig

    ap = argparse.ArgumentParser(description="Measure the judge's false-keep and detection rates.")
    ap.add_argument("--simulate", type=int, default=20000, metavar="N", help="experiments per cell")
    ap.add_argument("--seed-sigma", type=float, default=0.0, help="seed-to-seed std, in units of sigma_d")
    args = ap.parse_args(argv)
    jc = JudgeConfig()
    print(f"{args.simulate} experiments per cell; keep rate by true gain in units of sigma_d")
    for parallel, name in ((1, "one run at a time, or billed per run"), (2, "two or more slots of its own")):
        print(f"\n{name} (looks after {', '.join(map(str, looks(jc, parallel)))} pairs)")
        print("prior dof   no effect   1 sigma_d   2 sigma_d   3 sigma_d   pairs (no effect)")
        for line in table(jc, parallel, args.simulate, args.seed_sigma):
            print(line)
    print("\nno effect, 20 prior dof, the candidate's own sigma_d / the pool's:")
    print("     looks   " + "   ".join(f"{r:>8}x" for r in SPREADS))
    for line in spread_table(jc, args.simulate):
        print(line)


if __name__ == "__main__":
    main()
