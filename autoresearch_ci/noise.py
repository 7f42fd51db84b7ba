"""The noise: how far val_bpb moves from run to run, and how much evidence stands behind that.

Two estimates, for the two ways of comparing:

    unpaired   sigma = pooled sample std of the baseline runs, one group per train.py measured
               (sum of squared deviations from each group's mean / sum of (runs - 1));
               dof = sum over groups of (runs - 1). Shown for old, unpaired records.
    paired     sigma_d = the std of one per-seed difference (candidate - baseline on the same seed),
               from a two-way fit (code + seed) of every val_bpb in a block: one base train.py and
               the candidates paired with it. Its residual is the code x seed interaction plus the
               run-to-run noise, i.e. exactly what pairing leaves: sigma_d^2 = 2 x residual variance.
               dof = sum over blocks of (cells - rows - seeds + 1).

Why the two-way fit and not the spread of the candidates' paired differences: every candidate of
one base is paired with the same baseline runs, so their differences share the baseline's errors,
and pooling them counts the baseline's spread once per candidate with dof it does not have (simulated:
2.6% false keeps at a nominal 20 dof, with 20 candidates on one base). The fit gives the baseline
one row among the others, and its residual mean square has honest dof.

With sigma estimated from few degrees of freedom, a k-sigma bar lets too much through; the verdict
(verdict.py) replaces k by the Student-t quantile with the same one-sided tail, `t_multiplier`.
Pure arithmetic over numbers; nothing here reads the ledger.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from autoresearch_ci.records import BaselineStats


class NoiseEstimate(BaseModel):
    """The run-to-run spread of val_bpb and how much evidence stands behind it."""

    model_config = ConfigDict(frozen=True)

    sigma: float  # pooled sample std (ddof=1 within each group); 0.0 when dof == 0
    dof: int  # sum over groups of (runs - 1)
    groups: int  # baseline commits that contributed

    def __float__(self) -> float:
        return self.sigma


def noise_estimate(baseline_groups: Iterable[Sequence[float] | BaselineStats] | Mapping) -> NoiseEstimate:
    """Pooled sample std across groups of baseline val_bpb (one group per baseline commit).

    sigma^2 = sum_g sum_i (x_gi - mean_g)^2 / sum_g (n_g - 1). Groups of one run add nothing. The judge
    applies `noise_floor`, so a lucky zero spread never makes the threshold vanish."""
    if isinstance(baseline_groups, Mapping):
        baseline_groups = baseline_groups.values()
    ss, dof, used = 0.0, 0, 0
    for g in baseline_groups:
        values = g.values if isinstance(g, BaselineStats) else g
        xs = [float(x) for x in values if x is not None and math.isfinite(x)]
        if len(xs) < 2:
            continue
        mean = statistics.fmean(xs)
        ss += sum((x - mean) ** 2 for x in xs)
        dof += len(xs) - 1
        used += 1
    return NoiseEstimate(sigma=math.sqrt(ss / dof) if dof else 0.0, dof=dof, groups=used)


# ----------------------------------------------------------------------------------------------
# paired: the two-way fit

Row = Mapping[int, float]  # seed -> val_bpb of one train.py (one value per seed)


@functools.lru_cache(maxsize=4096)
def residual_operator(layout: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, int]:
    """(M, dof) for a layout of rows, each the sorted seeds it has a value on.

    M = I - H projects the cells (row by row, seeds in order) onto the residual of the additive fit
    value = row effect + seed effect, so the residual sum of squares of values x is x' M x; dof is
    cells - rank of the design. Cached: the simulation applies one layout to many experiments."""
    cells = [(r, s) for r, seeds in enumerate(layout) for s in seeds]
    if not cells:
        return np.zeros((0, 0)), 0
    seeds = sorted({s for _, s in cells})
    col = {s: len(layout) + i for i, s in enumerate(seeds)}
    design = np.zeros((len(cells), len(layout) + len(seeds)))
    for i, (r, s) in enumerate(cells):
        design[i, r] = 1.0
        design[i, col[s]] = 1.0
    rank = int(np.linalg.matrix_rank(design))
    m = np.eye(len(cells)) - design @ np.linalg.pinv(design)
    return m, len(cells) - rank


def _layout(rows: Sequence[Row]) -> tuple[tuple[tuple[int, ...], ...], list[float]]:
    layout, values = [], []
    for row in rows:
        seeds = tuple(sorted(s for s, v in row.items() if v is not None and math.isfinite(v)))
        layout.append(seeds)
        values.extend(float(row[s]) for s in seeds)
    return tuple(layout), values


def residual_ss(rows: Sequence[Row]) -> tuple[float, int]:
    """(residual sum of squares, dof) of the two-way fit of one block's rows (seed -> value each).

    A seed only one row has, or a row with one seed, adds a cell and a parameter: nothing to the dof.
    """
    layout, values = _layout(rows)
    m, dof = residual_operator(layout)
    if dof <= 0:
        return 0.0, 0
    x = np.asarray(values)
    return max(float(x @ m @ x), 0.0), dof


def paired_noise(blocks: Iterable[Sequence[Row]]) -> NoiseEstimate:
    """sigma_d, the std of one per-seed paired difference, pooled over blocks (see the module doc).

    Each block is a list of rows (the base's and its candidates' val_bpb by seed). sigma_d^2 is twice
    the pooled residual mean square: a difference of two runs carries two runs' residuals."""
    ss, dof, used = 0.0, 0, 0
    for rows in blocks:
        s, d = residual_ss(rows)
        if d > 0:
            ss, dof, used = ss + s, dof + d, used + 1
    return NoiseEstimate(sigma=math.sqrt(2.0 * ss / dof) if dof else 0.0, dof=dof, groups=used)


# ----------------------------------------------------------------------------------------------
# Student-t


def _t_cdf(t: float, dof: int) -> float:
    """Student-t CDF for integer dof (Abramowitz & Stegun 26.7.3 and 26.7.4: finite series)."""
    if t < 0:
        return 1.0 - _t_cdf(-t, dof)
    theta = math.atan(t / math.sqrt(dof))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if dof % 2 == 1:
        total, term = 0.0, 1.0
        for k in range(1, (dof - 1) // 2 + 1):  # 1 + 2/3 c^2 + 2*4/(3*5) c^4 + ...
            total += term
            term *= c2 * (2 * k) / (2 * k + 1)
        a = 2 / math.pi * (theta + (s * math.cos(theta) * total if dof > 1 else 0.0))
    else:
        total, term = 0.0, 1.0
        for k in range(1, dof // 2 + 1):  # 1 + 1/2 c^2 + 1*3/(2*4) c^4 + ...
            total += term
            term *= c2 * (2 * k - 1) / (2 * k)
        a = s * total
    return (1.0 + a) / 2.0


def t_multiplier(k: float, dof: int | None) -> float:
    """The Student-t quantile (dof) with the same one-sided tail as k standard normal deviations.

    With sigma estimated from dof degrees of freedom, delta / (s * se) is t-distributed, so this
    keeps the false-keep rate of the k-sigma rule whatever the number of baseline runs."""
    if dof is None or dof > 1000:
        return k
    if dof < 1:
        raise ValueError("the noise needs at least one degree of freedom")
    p = statistics.NormalDist().cdf(k)
    lo, hi = 0.0, max(k, 1.0)
    while _t_cdf(hi, dof) < p:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, dof) < p else (lo, mid)
    return (lo + hi) / 2


def t_quantile(p: float, dof: int | None) -> float:
    """The Student-t quantile of probability p (normal when dof is None or huge): for intervals."""
    return t_multiplier(statistics.NormalDist().inv_cdf(p), dof)
