"""The verdict: keep a candidate only when it beats the baseline by more than the noise.

Pure: numbers in, verdict out. Nothing here runs, reads or writes anything; the judge step
(steps/judge.py) hands it the runs and the baseline (baselines.py) and records what it says.

    noise   = pooled sample std of val_bpb over baseline runs of the same (preset, runner, device),
              pooled across baseline commits, so 2 seeds per baseline still add up to a usable estimate
    delta   = mean(candidate runs) - mean(baseline runs)                (negative is better)
    thr     = max(min_effect, k * max(noise, noise_floor) * sqrt(1/m + 1/n))
    keep   iff delta < -thr

m and n count candidate and baseline runs. k is `noise_multiplier` (2.0) when the noise is known;
with an estimate from only `dof` degrees of freedom, k is replaced by the Student-t quantile with the
same tail probability (2.0 -> 4.53 at 2 dof, 2.65 at 5, 2.28 at 10), because a spread measured on
a handful of runs is often far too small: with the plain 2-sigma rule one baseline of two seeds lets
12% of changes that do nothing through (6.8% at 2 dof, 3.3% at 5; 20,000 simulated experiments each).
A win measured on one run and smaller than `confirm_margin` (1.5) times the threshold is not kept yet:
decide() returns NeedConfirmation, the loop runs the candidate again with a new seed and calls
decide() with both runs.

Error rates, measured with `simulate()`: 100,000 synthetic experiments per cell, default settings
(k=2, confirm_margin=1.5, 2 baseline seeds per commit, one candidate run plus a confirmation when
marginal), noise sigma 10x min_effect so the noise term is what decides. "sigma" is the run-to-run
std of one run; "SE" the standard error of a one-run-vs-two comparison (1.22 sigma).

    baseline commits  dof   kept, no effect   kept, 3 sigma gain   3 SE gain   5 sigma gain
    1                 1     1.79%             13.6%                16.5%       23.1%
    2                 2     1.62%             25.8%                35.5%       53.8%
    5                 5     1.36%             46.7%                63.9%       88.4%
    10                10    1.18%             56.2%                74.8%       95.0%

So a change that does nothing is kept 1.2-1.8% of the time (about 1 in 60-85), whatever the number
of baselines; the confirmation step is asked for 0.8-1.9% of no-effect candidates. Small true gains
are often missed until a few baselines are pooled: that is the price of not merging noise, and
more candidate seeds (not a looser threshold) is the way to buy power. Caveats: the rates are per
candidate, so with K candidates a tick some no-effect change is kept about K times as often; and
all candidates of one base commit share its baseline mean, so a baseline that came out high by
chance favours several at once (re-measuring it, baseline_max_experiments, bounds the streak).

Reproduce: python -m autoresearch_ci.verdict --simulate 100000
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from autoresearch_ci.noise import NoiseEstimate, noise_estimate, t_multiplier
from autoresearch_ci.records import BaselineStats, RunOutcome, Verdict
from harness.protocol import CANDIDATE_FAILURES

if TYPE_CHECKING:
    from autoresearch_ci.config import Config, JudgeConfig


class NeedConfirmation(BaseModel):
    """A marginal win on a single run: run the candidate once more (new seed) and decide again."""

    reason: str
    candidate_mean: float
    baseline_mean: float
    delta: float
    threshold: float
    noise: float
    runs: int


# ----------------------------------------------------------------------------------------------
# the decision


def _judge_cfg(cfg: Config | JudgeConfig) -> JudgeConfig:
    return getattr(cfg, "judge", cfg)


def _error_line(text: str | None) -> str:
    """The line of an error that says what happened: the harness puts it first, a traceback last."""
    lines = [x.strip() for x in (text or "").strip().splitlines() if x.strip()]
    if not lines:
        return "no error message"
    return (lines[-1] if lines[0].startswith("Traceback") else lines[0])[:300]


def _runs(n: int) -> str:
    return f"{n} run{'' if n == 1 else 's'}"


def decide(
    candidate_outcomes: Sequence[RunOutcome],
    baseline: BaselineStats,
    noise: NoiseEstimate | float,
    cfg: Config | JudgeConfig,
) -> Verdict | NeedConfirmation:
    """The verdict for a candidate's runs (candidate and confirmation) against the baseline.

    `noise` is a NoiseEstimate (its dof sets the t correction) or a float taken as the known sigma."""
    jc = _judge_cfg(cfg)
    if not baseline.values:
        raise ValueError("decide() needs a baseline with at least one value")
    base = dict(baseline_mean=baseline.mean)

    values: list[float] = []
    infra: list[str] = []
    invalid: list[str] = []
    crashed: list[str] = []
    for o in candidate_outcomes:
        m = o.metrics
        seed = o.request.seed
        if m is None or m.status == "infra_error":
            infra.append(
                f"seed {seed}: {o.infra_error or (m.error if m else None) or 'no metrics came back'}"
            )
        elif m.status == "invalid":
            invalid.append(f"seed {seed}: {_error_line(m.error)}")
        elif m.status in CANDIDATE_FAILURES or m.val_bpb is None or not math.isfinite(m.val_bpb):
            what = m.status if m.status in CANDIDATE_FAILURES else "no finite val_bpb"
            crashed.append(f"{what} (seed {seed}): {_error_line(m.error)}")
        elif o.request.preset != baseline.preset:
            return Verdict(
                decision="infra-error",
                reason=f"not comparable: the candidate ran on preset {o.request.preset}, "
                f"the baseline on {baseline.preset}",
                **base,
            )
        elif m.device and baseline.device and m.device != baseline.device:
            return Verdict(
                decision="infra-error",
                reason=f"not comparable: the candidate ran on {m.device}, "
                f"the baseline on {baseline.device}; results never cross hardware",
                **base,
            )
        else:
            values.append(m.val_bpb)
    # A run the harness rejected outweighs everything; a run that crashed sinks the candidate even
    # when another seed finished: a change that fails on some seeds is broken.
    if invalid:
        return Verdict(
            decision="invalid", reason="the harness rejected the run: " + "; ".join(invalid), **base
        )
    if crashed:
        return Verdict(decision="crash", reason="the candidate's run ended in " + "; ".join(crashed), **base)
    if not values:
        why = "; ".join(infra) or "the candidate has no runs"
        return Verdict(
            decision="infra-error", reason=f"no result: {why} (not charged to the candidate)", **base
        )

    est = (
        noise if isinstance(noise, NoiseEstimate) else NoiseEstimate(sigma=float(noise), dof=10**9, groups=0)
    )
    if est.dof < 1:
        return Verdict(
            decision="infra-error",
            reason="the baseline's spread is not known yet (need two ok "
            "baseline runs of one commit); not charged to the candidate",
            **base,
        )
    m, n = len(values), len(baseline.values)
    cand = statistics.fmean(values)
    delta = cand - baseline.mean
    sigma = max(est.sigma, jc.noise_floor)
    k = t_multiplier(jc.noise_multiplier, est.dof)
    noise_term = k * sigma * math.sqrt(1 / m + 1 / n)
    thr = max(jc.min_effect, noise_term)
    confirmed = any(o.request.role == "confirmation" for o in candidate_outcomes)
    nums = dict(candidate_mean=cand, baseline_mean=baseline.mean, delta=delta, threshold=thr, noise=sigma)

    kk = f"{jc.noise_multiplier:g}" if k == jc.noise_multiplier else f"{k:.2f} (t, {est.dof} dof)"
    floor = " (the noise floor)" if sigma > est.sigma else ""
    how = (
        f"the threshold {thr:.6f} is max(min effect {jc.min_effect:.6f}, {kk} x noise {sigma:.6f}{floor} "
        f"x sqrt(1/{m} + 1/{n}) = {noise_term:.6f})"
    )
    said = (
        f"val_bpb {cand:.6f} ({_runs(m)}) vs baseline {baseline.mean:.6f} ({_runs(n)}): "
        f"{'better' if delta < 0 else 'worse'} by {abs(delta):.6f}"
    )
    if delta < -thr:
        if m == 1 and -delta < thr * jc.confirm_margin:
            return NeedConfirmation(
                reason=f"{said}, a marginal win (less than {jc.confirm_margin:g}x the threshold {thr:.6f} "
                "on one run): confirm with a new seed before keeping it",
                runs=m,
                **nums,
            )
        after = ", upheld by a confirmation run" if confirmed else ""
        return Verdict(
            decision="keep",
            reason=f"{said}, more than the threshold{after}; {how}",
            confirmed=confirmed,
            **nums,
        )
    verdict = "within the noise" if delta < 0 else "no improvement"
    return Verdict(decision="discard", reason=f"{said}: {verdict}; {how}", **nums)


# ----------------------------------------------------------------------------------------------
# a tick's verdicts


def for_candidate(
    runs: Sequence[RunOutcome],
    baseline: BaselineStats | None,
    noise: NoiseEstimate | float,
    cfg: Config | JudgeConfig,
    *,
    proposal_ok: bool = True,
    guard_ok: bool = True,
    reasons: Sequence[str] = (),
) -> Verdict:
    """The final verdict of one candidate of a tick, whatever stopped it (never NeedConfirmation).

    `reasons` are the proposal's failure or the guard's objections. A marginal win whose
    confirmation run is missing is a discard: it is not kept without its confirmation."""
    if not proposal_ok:
        return Verdict(decision="proposal-failed", reason=reasons[0] if reasons else "proposal failed")
    if not guard_ok:
        return Verdict(decision="invalid", reason="guard: " + "; ".join(reasons))
    if baseline is None:
        return Verdict(decision="infra-error", reason="no baseline measurement succeeded for the base commit")
    if not runs:
        return Verdict(
            decision="infra-error", reason="the candidate was not run (train step missing or interrupted)"
        )
    out = decide(runs, baseline, noise, cfg)
    if isinstance(out, NeedConfirmation):
        return Verdict(
            decision="discard",
            reason="a marginal win whose confirmation run is missing; not kept without confirmation",
            candidate_mean=out.candidate_mean,
            baseline_mean=baseline.mean,
        )
    return out


def one_winner(verdicts: Sequence[tuple[str, Verdict]]) -> list[Verdict]:
    """(experiment id, verdict) of a tick's candidates -> their verdicts with at most one keep.

    Two wins measured against the same base are not known to stack, so only the biggest is merged;
    the other wins become discards, to be re-tested on the new base."""
    keeps = [(eid, v) for eid, v in verdicts if v.decision == "keep"]
    if not keeps:
        return [v for _, v in verdicts]
    winner = min(keeps, key=lambda t: t[1].delta if t[1].delta is not None else 0.0)[0]
    return [
        v
        if v.decision != "keep" or eid == winner
        else v.model_copy(
            update={
                "decision": "discard",
                "reason": f"beat the baseline ({v.reason}) but {winner} won this tick by more; "
                "re-test on the new base",
            }
        )
        for eid, v in verdicts
    ]


# ----------------------------------------------------------------------------------------------
# simulation: the error rates of this rule, measured rather than argued


def simulate(
    cfg: Config | JudgeConfig,
    *,
    effect_sigmas: float,
    sigma: float,
    experiments: int = 2000,
    baseline_commits: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Run `experiments` synthetic experiments through decide() and return the rates.

    Each experiment: `baseline_commits` baselines of `baseline_seeds` runs (the newest is the one
    compared against) drawn from N(0, sigma^2) give the pooled noise; the candidate's runs are drawn
    from N(effect_sigmas * sigma, sigma^2) one at a time, a second one only when decide() asks for it."""
    import numpy as np

    from autoresearch_ci.records import RunMetrics, RunRequest

    jc = _judge_cfg(cfg)
    rng = np.random.default_rng(seed)
    n = jc.baseline_seeds
    keeps = confirmations = 0

    def run(value: float, role: str, s: int) -> RunOutcome:
        req = RunRequest(experiment_id="sim", role=role, commit="c", train_py="", preset="sim", seed=s)
        return RunOutcome(request=req, runner="sim", metrics=RunMetrics(status="ok", val_bpb=value))

    for _ in range(experiments):
        groups = rng.normal(0.0, sigma, size=(baseline_commits, n))
        current = groups[-1]
        baseline = BaselineStats(
            commit="b",
            preset="sim",
            runner="sim",
            values=current.tolist(),
            seeds=list(range(n)),
            mean=float(current.mean()),
            std=float(current.std(ddof=1)),
        )
        noise = noise_estimate(groups.tolist())
        outcomes = [run(float(rng.normal(effect_sigmas * sigma, sigma)), "candidate", 0)]
        out = decide(outcomes, baseline, noise, jc)
        if isinstance(out, NeedConfirmation):
            confirmations += 1
            outcomes.append(run(float(rng.normal(effect_sigmas * sigma, sigma)), "confirmation", 1000))
            out = decide(outcomes, baseline, noise, jc)
        keeps += out.decision == "keep"
    return {"keep_rate": keeps / experiments, "confirmation_rate": confirmations / experiments}


def _main(argv: list[str] | None = None) -> None:
    import argparse

    from autoresearch_ci.config import JudgeConfig

    ap = argparse.ArgumentParser(description="Measure the judge's false-keep and detection rates.")
    ap.add_argument("--simulate", type=int, default=20000, metavar="N", help="experiments per row")
    args = ap.parse_args(argv)
    jc = JudgeConfig()
    sigma = 10 * jc.min_effect  # so that the noise term, not min_effect, sets the bar
    se = math.sqrt(1 + 1 / jc.baseline_seeds)  # one candidate run vs the baseline's runs, in sigmas
    effects = [("no effect", 0.0), ("3 sigma", 3.0), ("3 SE", 3.0 * se), ("5 sigma", 5.0)]
    print(
        f"{args.simulate} experiments per cell; keep rate by true gain "
        f"(sigma: one run's std; SE: {se:.2f} sigma)"
    )
    print("commits  dof  " + "  ".join(f"{name:>9}" for name, _ in effects) + "  confirmations(no effect)")
    for commits in (1, 2, 5, 10):
        cells, conf = [], 0.0
        for i, (_, eff) in enumerate(effects):
            r = simulate(
                jc,
                effect_sigmas=-eff,
                sigma=sigma,
                experiments=args.simulate,
                baseline_commits=commits,
                seed=i,
            )
            cells.append(r["keep_rate"])
            conf = conf or r["confirmation_rate"]
        dof = commits * (jc.baseline_seeds - 1)
        print(f"{commits:7d}  {dof:3d}  " + "  ".join(f"{c:9.2%}" for c in cells) + f"  {conf:.2%}")


if __name__ == "__main__":
    _main()
