"""The noise: how far val_bpb moves from run to run, and how much evidence stands behind that.

    sigma = pooled sample std of the baseline runs, one group per train.py measured
            (sum of squared deviations from each group's mean / sum of (runs - 1))
    dof   = sum over groups of (runs - 1)

With sigma estimated from few degrees of freedom, a k-sigma bar lets too much through; the verdict
(verdict.py) replaces k by the Student-t quantile with the same one-sided tail, `t_multiplier`.
Pure arithmetic over numbers; nothing here reads the ledger.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

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
