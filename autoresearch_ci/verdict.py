"""The verdict: keep a candidate only when it beats its base, seed by seed, by more than the noise.

Pure: numbers in, verdict out. Nothing here runs, reads or writes anything; the train step
(steps/train.py) asks `decide` after each round whether a candidate needs more pairs, and the judge
step (steps/judge.py) asks it for the final verdict, with the baseline and noise of baselines.py.

Paired seeds. The base and the candidate run on the same seeds 0, 1, 2, ... (same initialisation,
same data order), and the judge looks at the per-seed differences d_s = candidate_s - base_s. The
model, in val_bpb:

    y(code c, seed s) = mu_c + a_s + b_cs + e        a_s: what the seed does to every train.py
                                                     b_cs: code x seed interaction; e: run noise
    d_s = (mu_cand - mu_base) + (b_cand,s - b_base,s) + (e - e')

a_s cancels: var(d) = sigma_d^2 = 2 sigma_int^2 + 2 sigma_run^2, however large the seed-to-seed
spread (std 0.040 on the gpu preset over three seeds of one train.py; a_s is most of it).
sigma_d is estimated by noise.paired_noise (a two-way fit over the base and the candidates paired
with it, this candidate included) with `dof` degrees of freedom.

The sequential rule, after k pairs (mean difference m, se = sigma_d / sqrt(k)):

    keep      k >= 2 and m < -max(min_effect, t(c, dof) * se)      c = noise_multiplier (2.5)
              and the candidate's own t-test agrees (own_agrees)   own_z (1.645)
    discard   m > -f * se  (futility: not heading for a keep;      f = futility_z (0.5)
              m >= 0 while no sigma_d is known yet)
              or k = max_pairs (4) without a keep
    more      otherwise: the next round adds pairs_per_round pairs

t(c, dof) is the Student-t quantile with the same one-sided tail as c (noise.t_multiplier): 2.5
-> 51 at 1 dof, 5.4 at 3, 3.0 at 10, 2.7 at 30. It is the conservative start: with a handful of
degrees of freedom only a large win is kept. A keep needs two pairs at least (a replicated win).
(Not the baseline's seed-to-seed spread x sqrt(2) as an upper bound on sigma_d while the dof are
few: it bounds sigma_d only through the seed effect, and where that is small, which is where the
bound would be used, taking the smaller of the two bars lets 2.1-2.5% of no-effect candidates
through in the same simulation; where the seed effect is large the bound never wins.)
The train step looks after every round: after 1, 2, 3, 4 pairs where runs go one at a time or each
run is billed (Modal), after 2 and 4 where the runner has two or more slots of its own (the local
runner on a CPU-time clock), see looks(). The judge asks at the last look only, with the
same numbers (the noise of a tick is computed from the ledger before it and the candidate's own
runs, never from its siblings'), so it says what the train step saw.

Error rates, measured with simulation.py (100,000 synthetic candidates per cell, the noise estimate
included; its docstring has the tables): a change with no effect is kept 0.7-1.5% of the time per
candidate, at every prior dof from 0 to 50, with either schedule of looks, whatever the seed-to-seed
spread (a_s cancels in every difference and in the fit); a gain of 2 sigma_d 37-87%, of 3 sigma_d
70-99.6%. What does enter is a candidate whose effect swings with the seed more than the others'
(its own sigma_d larger than the pool's; measured on the cpu preset: MATRIX_LR x1.4 had 2.5x the
sigma_d of two other one-constant changes): at 2x the pool's, the pooled bar alone keeps 10% of such
no-effect changes, the own-seeds guard (own_agrees) 4.9-5.6%, for 2-4 points of power.

Caveats: the rates are per candidate (K candidates a tick: some no-effect change is kept about K
times as often, and at most one is merged); and the 95% interval a keep reports is the naive one,
taken at the look that stopped, so it leans optimistic (the winner's curse): the yield benchmark
re-measures on fresh seeds for an honest number.

Reproduce: python -m autoresearch_ci.simulation --simulate 100000
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel

from autoresearch_ci.noise import NoiseEstimate, t_multiplier, t_quantile
from autoresearch_ci.records import BaselineStats, RunOutcome, Verdict, ok_runs
from harness.protocol import CANDIDATE_FAILURES

if TYPE_CHECKING:
    from autoresearch_ci.config import Config, JudgeConfig

KEEP, DISCARD, MORE = "keep", "discard", "more"


class MorePairs(BaseModel):
    """Not decided yet: the candidate is heading for a keep but has not earned it; run more pairs."""

    reason: str
    pairs: int
    delta: float
    threshold: float
    noise: float


# ----------------------------------------------------------------------------------------------
# the rule


def _judge_cfg(cfg: Config | JudgeConfig) -> JudgeConfig:
    return getattr(cfg, "judge", cfg)


def looks(jc: JudgeConfig, parallel: int | None) -> list[int]:
    """The pair counts after which the train step decides, up to max_pairs: every second pair when
    the runner has two or more slots of its own (`parallel`: a second run side by side costs no
    time), else every pair (one run at a time; or a runner that bills every run, parallel None,
    where a look after each pair saves runs). pairs_per_round overrides."""
    step = jc.pairs_per_round or (2 if parallel is not None and parallel >= 2 else 1)
    out = list(range(step, jc.max_pairs + 1, step))
    return out if out and out[-1] == jc.max_pairs else [*out, jc.max_pairs]


def classify(mean, sigma, k: int, dof: int, jc: JudgeConfig, own_sd=None):
    """The rule at one look: KEEP, DISCARD or MORE for the mean paired difference after k pairs.

    Scalars or numpy arrays (the simulation runs this very function on many experiments at once).
    sigma is the noise estimate (sigma_d) before the noise floor; dof its degrees of freedom;
    own_sd the sample std of the candidate's own k differences (the own-seeds guard, own_z)."""
    import numpy as np

    sigma = np.maximum(sigma, jc.noise_floor)
    se = sigma / math.sqrt(k)
    bar = np.maximum(jc.min_effect, t_multiplier(jc.noise_multiplier, dof) * se) if dof >= 1 else math.inf
    keep = (k >= 2) & (mean < -bar)
    if own_sd is not None and jc.own_z > 0 and k >= 2:
        keep = keep & own_agrees(mean, own_sd, k, jc)
    # Without a noise estimate (the first pair of the first candidate) only "not better at all" is futile.
    futile = (mean > -jc.futility_z * se) if dof >= 1 else (mean >= 0)
    out = np.where(keep, KEEP, np.where(futile | (k >= jc.max_pairs), DISCARD, MORE))
    return out.item() if out.ndim == 0 else out


def own_agrees(mean, own_sd, k: int, jc: JudgeConfig):
    """The own-seeds guard: the candidate's own paired t-test (k - 1 dof) is better than -own_z
    standard errors at the same one-sided tail. The pooled sigma_d assumes every change interacts
    with the seeds about as much as the others; one whose effect swings from seed to seed (measured:
    MATRIX_LR +40% on the cpu preset, sigma_d 2.5x the other changes') would pass the pooled bar on
    two lucky seeds. This test is exact whatever its own spread, so together they hold the rate."""
    return mean < -t_multiplier(jc.own_z, k - 1) * own_sd / math.sqrt(k)


def threshold(sigma: float, k: int, dof: int, jc: JudgeConfig) -> float:
    """The improvement a keep needs after k pairs (positive; inf while the noise is unknown)."""
    if dof < 1:
        return math.inf
    se = max(sigma, jc.noise_floor) / math.sqrt(k)
    return max(jc.min_effect, t_multiplier(jc.noise_multiplier, dof) * se)


def interval(mean: float, sigma: float, k: int, dof: int, jc: JudgeConfig) -> tuple[float, float] | None:
    """The 95% Student-t interval of the mean paired difference (None while the noise is unknown)."""
    if dof < 1 or k < 1:
        return None
    half = t_quantile(0.975, dof) * max(sigma, jc.noise_floor) / math.sqrt(k)
    return mean - half, mean + half


# ----------------------------------------------------------------------------------------------
# the decision


def _error_line(text: str | None) -> str:
    """The line of an error that says what happened: the harness puts it first, a traceback last."""
    lines = [x.strip() for x in (text or "").strip().splitlines() if x.strip()]
    if not lines:
        return "no error message"
    return (lines[-1] if lines[0].startswith("Traceback") else lines[0])[:300]


def pairs_of(
    candidate_outcomes: Sequence[RunOutcome], baseline: BaselineStats
) -> list[tuple[int, float, float]]:
    """(seed, candidate, base) for every seed both have an ok value on, in seed order."""
    base = baseline.by_seed()
    cand: dict[int, float] = {}
    for o in ok_runs(candidate_outcomes):
        cand.setdefault(o.request.seed, o.metrics.val_bpb)
    return [(s, cand[s], base[s]) for s in sorted(cand) if s in base and math.isfinite(cand[s])]


def fmt_interval(v: Verdict) -> str:
    """'paired Δ -0.012300 [-0.018000, -0.006600] (3 pairs)', or the unpaired delta of an old record."""
    if v.delta is None:
        return "-"
    if not v.paired:
        return f"Δ {v.delta:+.6f}"
    ci = f" [{v.delta_low:+.6f}, {v.delta_high:+.6f}]" if v.delta_low is not None else ""
    return f"paired Δ {v.delta:+.6f}{ci} ({v.pairs} pair{'' if v.pairs == 1 else 's'})"


def decide(
    candidate_outcomes: Sequence[RunOutcome],
    baseline: BaselineStats,
    noise: NoiseEstimate,
    cfg: Config | JudgeConfig,
) -> Verdict | MorePairs:
    """The verdict for a candidate's runs against the base's runs on the same seeds, or MorePairs.

    `noise` is the paired estimate (sigma_d and its dof) for this candidate: baselines.paired_noise."""
    jc = _judge_cfg(cfg)
    if not baseline.values:
        raise ValueError("decide() needs a baseline with at least one value")
    base = dict(baseline_mean=baseline.mean)

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
    # A run the harness rejected outweighs everything; a run that crashed sinks the candidate even
    # when another seed finished: a change that fails on some seeds is broken.
    if invalid:
        return Verdict(
            decision="invalid", reason="the harness rejected the run: " + "; ".join(invalid), **base
        )
    if crashed:
        return Verdict(decision="crash", reason="the candidate's run ended in " + "; ".join(crashed), **base)
    pairs = pairs_of(candidate_outcomes, baseline)
    if not pairs:
        why = "; ".join(infra) or (
            "no baseline run on the candidate's seeds"
            if ok_runs(candidate_outcomes)
            else "the candidate has no runs"
        )
        return Verdict(
            decision="infra-error", reason=f"no result: {why} (not charged to the candidate)", **base
        )

    k = len(pairs)
    seeds = [s for s, _, _ in pairs]
    deltas = [c - b for _, c, b in pairs]
    mean = statistics.fmean(deltas)
    cand_mean = statistics.fmean(c for _, c, _ in pairs)
    base_mean = statistics.fmean(b for _, _, b in pairs)
    sigma, dof = noise.sigma, noise.dof
    thr = threshold(sigma, k, dof, jc)
    ci = interval(mean, sigma, k, dof, jc)
    nums = dict(
        candidate_mean=cand_mean,
        baseline_mean=base_mean,
        delta=mean,
        threshold=thr if math.isfinite(thr) else None,
        noise=max(sigma, jc.noise_floor) if dof >= 1 else None,
        pairs=k,
        seeds=seeds,
        paired_deltas=deltas,
        delta_low=ci[0] if ci else None,
        delta_high=ci[1] if ci else None,
        noise_dof=dof,
    )
    said = (
        f"paired Δ {mean:+.6f}"
        + (f" [{ci[0]:+.6f}, {ci[1]:+.6f}]" if ci else "")
        + f" over {k} seed{'' if k == 1 else 's'} ({', '.join(map(str, seeds))}): "
        f"val_bpb {cand_mean:.6f} vs the base's {base_mean:.6f} on the same seeds"
    )
    if dof >= 1:
        mult = t_multiplier(jc.noise_multiplier, dof)
        floor = " (the noise floor)" if sigma < jc.noise_floor else ""
        how = (
            f"the bar {thr:.6f} is max(min effect {jc.min_effect:.6f}, {mult:.2f} (t, {dof} dof, "
            f"c={jc.noise_multiplier:g}) x sigma_d {max(sigma, jc.noise_floor):.6f}{floor} / sqrt({k}))"
        )
    else:
        how = "the noise of a paired difference is not known yet"
    own_sd = statistics.stdev(deltas) if k >= 2 else None
    what = classify(mean, sigma, k, dof, jc, own_sd)
    if what == KEEP:
        return Verdict(decision="keep", reason=f"{said}: better than the bar; {how}", **nums)
    if what == MORE:
        disagree = mean < -thr and own_sd is not None and not own_agrees(mean, own_sd, k, jc)
        return MorePairs(
            reason=f"{said}: "
            + ("better than the bar, but its own seeds disagree" if disagree else "promising, not decided")
            + f"; {how}",
            pairs=k,
            delta=mean,
            threshold=nums["threshold"] or math.inf,
            noise=sigma,
        )
    if dof < 1 or mean > -jc.futility_z * max(sigma, jc.noise_floor) / math.sqrt(k):
        why = "no improvement" if mean >= 0 else "too small to be heading for a keep"
        why += f" (futility: above -{jc.futility_z:g} standard errors)"
    elif mean < -thr and own_sd is not None and not own_agrees(mean, own_sd, k, jc):
        why = (
            f"better than the bar, but its own seeds disagree (their differences spread by {own_sd:.6f}: "
            f"own t-test not past {jc.own_z:g}) after {k} pairs, the most a candidate gets"
        )
    else:
        why = f"better, but not by the bar after {k} pairs (the most a candidate gets)"
    return Verdict(decision="discard", reason=f"{said}: {why}; {how}", **nums)


# ----------------------------------------------------------------------------------------------
# a tick's verdicts


def for_candidate(
    runs: Sequence[RunOutcome],
    baseline: BaselineStats | None,
    noise: NoiseEstimate,
    cfg: Config | JudgeConfig,
    *,
    proposal_ok: bool = True,
    guard_ok: bool = True,
    reasons: Sequence[str] = (),
) -> Verdict:
    """The final verdict of one candidate of a tick, whatever stopped it (never MorePairs).

    `reasons` are the proposal's failure or the guard's objections. A candidate whose rounds were
    cut short (runs lost to the infrastructure, or a train step that did not finish) is not kept on
    partial evidence: infra-error when runs were lost (not charged, the PR stays open), else discard."""
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
    if isinstance(out, MorePairs):
        lost = [o for o in runs if o.metrics is None or o.metrics.status == "infra_error"]
        decision = "infra-error" if lost else "discard"
        why = (
            f"{len(lost)} run(s) lost to the infrastructure (not charged to the candidate)"
            if lost
            else "its remaining pairs were not run"
        )
        return Verdict(
            decision=decision,
            reason=f"{out.reason}; not kept on partial evidence: {why}",
            delta=out.delta,
            baseline_mean=baseline.mean,
            pairs=out.pairs,
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


if __name__ == "__main__":  # the command earlier versions cite; the simulation lives in simulation.py
    from autoresearch_ci.simulation import main

    main()
