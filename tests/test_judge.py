"""Judge: the noise estimate, the decision rule, confirmation, staleness, and its measured error rates."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from autoresearch_ci.baselines import baseline_is_stale, baseline_staleness
from autoresearch_ci.config import Config, JudgeConfig
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.noise import NoiseEstimate, noise_estimate, t_multiplier
from autoresearch_ci.records import BaselineStats, ExperimentRecord, RunMetrics, RunOutcome, RunRequest
from autoresearch_ci.verdict import NeedConfirmation, decide, simulate

CFG = JudgeConfig()


def outcome(
    val=None,
    status="ok",
    role="candidate",
    seed=0,
    device="cpu",
    preset="cpu",
    runner="local",
    error=None,
    infra=None,
) -> RunOutcome:
    req = RunRequest(experiment_id="e", role=role, commit="c", train_py="", preset=preset, seed=seed)
    metrics = None if infra else RunMetrics(status=status, val_bpb=val, device=device, error=error)
    return RunOutcome(request=req, runner=runner, metrics=metrics, infra_error=infra)


def base(values, device="cpu") -> BaselineStats:
    return BaselineStats(
        commit="b" * 40,
        preset="cpu",
        runner="local",
        device=device,
        values=values,
        seeds=list(range(len(values))),
        mean=float(np.mean(values)),
        std=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
    )


# ----------------------------------------------------------------------------------------------
# noise


def test_noise_is_pooled_across_commits():
    groups = [[1.0, 1.2], [2.0, 2.2, 2.4], [3.0]]  # the singleton adds no spread information
    est = noise_estimate(groups)
    ss = 0.02 + 0.08  # (0.1^2 * 2) + (0.2^2 + 0 + 0.2^2)
    assert est.dof == 3 and est.groups == 2
    assert est.sigma == pytest.approx(math.sqrt(ss / 3))
    assert noise_estimate({"a": [1.0, 1.2], "b": [2.0, 2.2, 2.4]}) == est  # ledger.baseline_groups' shape
    assert noise_estimate([base([1.0, 1.2]), base([2.0, 2.2, 2.4])]) == est


def test_noise_ignores_nan_and_reports_no_information():
    assert noise_estimate([[1.0, float("nan")], [2.0]]) == NoiseEstimate(sigma=0.0, dof=0, groups=0)


def test_t_multiplier_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for dof in (1, 2, 3, 5, 8, 13, 40):
        for k in (1.5, 2.0, 3.0):
            assert t_multiplier(k, dof) == pytest.approx(stats.t.ppf(stats.norm.cdf(k), dof), rel=1e-9)
    assert t_multiplier(2.0, None) == 2.0 and t_multiplier(2.0, 10**6) == 2.0


def test_lucky_zero_spread_does_not_remove_the_bar():
    cfg = JudgeConfig(min_effect=0.0, noise_floor=0.001)
    v = decide(
        [outcome(1.4999), outcome(1.4999, role="confirmation", seed=1000)],
        base([1.5, 1.5]),
        noise_estimate([[1.5, 1.5], [1.4, 1.4]]),
        cfg,
    )
    assert v.decision == "discard" and v.noise == 0.001 and v.threshold > 0
    assert "noise floor" in v.reason


# ----------------------------------------------------------------------------------------------
# decisions


def test_clear_win_is_kept_with_numbers_in_the_reason():
    noise = NoiseEstimate(sigma=0.001, dof=8, groups=8)
    v = decide([outcome(1.490)], base([1.500, 1.501]), noise, CFG)
    assert v.decision == "keep" and not v.confirmed
    assert v.delta == pytest.approx(-0.0105) and v.baseline_mean == pytest.approx(1.5005)
    k = t_multiplier(2.0, 8)
    assert v.threshold == pytest.approx(max(CFG.min_effect, k * 0.001 * math.sqrt(1 + 1 / 2)))
    assert "1.490000" in v.reason and "1.500500" in v.reason and "better by 0.010500" in v.reason
    assert "threshold" in v.reason and "8 dof" in v.reason


def test_loss_and_within_noise_are_discarded():
    noise = NoiseEstimate(sigma=0.002, dof=10, groups=10)
    worse = decide([outcome(1.51)], base([1.50, 1.50]), noise, CFG)
    assert worse.decision == "discard" and "worse by" in worse.reason and "no improvement" in worse.reason
    close = decide([outcome(1.499)], base([1.50, 1.50]), noise, CFG)
    assert close.decision == "discard" and "within the noise" in close.reason


def test_min_effect_binds_when_noise_is_tiny():
    noise = NoiseEstimate(sigma=1e-5, dof=20, groups=20)
    v = decide([outcome(1.4995)], base([1.5, 1.5]), noise, JudgeConfig(min_effect=0.001, noise_floor=0.0))
    assert v.decision == "discard" and v.threshold == 0.001


@pytest.mark.parametrize("status", ["crash", "timeout", "nan"])
def test_crash_never_keeps(status):
    # even a "great" number next to a crash is a crash: a candidate that fails on one seed is broken
    runs = [
        outcome(0.1),
        outcome(None, status=status, role="confirmation", seed=1000, error="CUDA OOM\n[harness] a log line"),
    ]
    v = decide(runs, base([1.5, 1.5]), NoiseEstimate(sigma=0.001, dof=5, groups=5), CFG)
    assert (
        v.decision == "crash" and status in v.reason and "CUDA OOM" in v.reason and "log line" not in v.reason
    )


def test_error_line_of_a_traceback_is_its_last():
    err = "Traceback (most recent call last):\n  File x\nRuntimeError: shape mismatch"
    v = decide([outcome(None, status="crash", error=err)], base([1.5, 1.5]), 0.001, CFG)
    assert v.reason.endswith("RuntimeError: shape mismatch")


def test_ok_status_without_finite_value_is_a_crash():
    v = decide([outcome(float("inf"))], base([1.5, 1.5]), 0.001, CFG)
    assert v.decision == "crash" and "no finite val_bpb" in v.reason


def test_invalid_and_infra():
    noise = NoiseEstimate(sigma=0.001, dof=5, groups=5)
    v = decide(
        [outcome(None, status="invalid", error="causality probe failed")], base([1.5, 1.5]), noise, CFG
    )
    assert v.decision == "invalid" and "causality" in v.reason
    v = decide([outcome(infra="modal: preempted")], base([1.5, 1.5]), noise, CFG)
    assert v.decision == "infra-error" and "preempted" in v.reason and "not charged" in v.reason
    v = decide([], base([1.5, 1.5]), noise, CFG)
    assert v.decision == "infra-error"
    # one run lost to the infrastructure does not sink the result of the other
    v = decide([outcome(1.40), outcome(infra="lost", role="confirmation")], base([1.5, 1.5]), noise, CFG)
    assert v.decision == "keep"


def test_results_never_cross_hardware_or_presets():
    noise = NoiseEstimate(sigma=0.001, dof=5, groups=5)
    v = decide([outcome(1.0, device="NVIDIA H100")], base([1.5, 1.5], device="NVIDIA A100"), noise, CFG)
    assert v.decision == "infra-error" and "never cross hardware" in v.reason
    v = decide([outcome(1.0, preset="gpu")], base([1.5, 1.5]), noise, CFG)
    assert v.decision == "infra-error" and "not comparable" in v.reason


def test_invalid_outweighs_crash():
    runs = [outcome(None, status="crash", error="oom"), outcome(None, status="invalid", role="confirmation")]
    v = decide(runs, base([1.5, 1.5]), 0.001, CFG)
    assert v.decision == "invalid"


def test_unknown_noise_is_not_charged():
    v = decide([outcome(1.0)], base([1.5]), NoiseEstimate(sigma=0.0, dof=0, groups=0), CFG)
    assert v.decision == "infra-error" and "spread is not known" in v.reason


def test_confirmation_flow():
    noise = NoiseEstimate(sigma=0.001, dof=10, groups=10)
    b = base([1.500, 1.500])
    thr1 = t_multiplier(2.0, 10) * 0.001 * math.sqrt(1.5)
    marginal = 1.5 - 1.2 * thr1  # beats the threshold, but by less than 1.5x it
    first = decide([outcome(marginal)], b, noise, CFG)
    assert isinstance(first, NeedConfirmation)
    assert first.runs == 1 and first.delta == pytest.approx(-1.2 * thr1) and "confirm" in first.reason

    upheld = decide(
        [outcome(marginal), outcome(marginal - 0.0005, role="confirmation", seed=1000)], b, noise, CFG
    )
    assert upheld.decision == "keep" and upheld.confirmed and "upheld by a confirmation run" in upheld.reason
    assert upheld.threshold < first.threshold  # two runs: a smaller standard error

    refuted = decide([outcome(marginal), outcome(1.501, role="confirmation", seed=1000)], b, noise, CFG)
    assert refuted.decision == "discard" and not refuted.confirmed

    big = decide([outcome(1.5 - 2 * thr1)], b, noise, CFG)  # a clear win needs no confirmation
    assert big.decision == "keep" and not big.confirmed


def test_accepts_full_config_and_plain_float_noise():
    v = decide([outcome(1.40)], base([1.5, 1.5]), 0.001, Config())
    assert v.decision == "keep" and v.noise == 0.001


# ----------------------------------------------------------------------------------------------
# the error rates, measured on synthetic experiments (numpy, fixed seeds)

SIGMA = 0.01  # 10x min_effect: the noise term decides, as on a CPU preset


def test_false_keep_rate_of_a_no_effect_change_is_about_one_percent():
    """2,000 no-effect candidates against pooled baselines of 5 commits x 2 seeds (5 dof).
    Measured: 1.2% with this seed (24 of 2,000); judge.py's docstring has the 100,000-experiment rates."""
    r = simulate(CFG, effect_sigmas=0.0, sigma=SIGMA, experiments=2000, baseline_commits=5, seed=7)
    assert r["keep_rate"] < 0.03
    assert r["confirmation_rate"] < 0.05


def test_false_keep_rate_holds_with_a_single_baseline():
    """The t correction: without it one baseline of 2 seeds (1 dof) lets 12% through (measured over
    20,000 with the plain 2-sigma rule); with it, 1.5% with this seed."""
    r = simulate(CFG, effect_sigmas=0.0, sigma=SIGMA, experiments=2000, baseline_commits=1, seed=8)
    assert r["keep_rate"] < 0.03


def test_true_improvements_are_kept():
    """A gain of 3 standard errors of the comparison (3.7 sigma of one run) and one of 5 sigma,
    with pooled baselines of 10 commits (10 dof), 2,000 experiments each."""
    three_se = simulate(
        CFG, effect_sigmas=-3.0 * math.sqrt(1.5), sigma=SIGMA, experiments=2000, baseline_commits=10, seed=9
    )
    assert three_se["keep_rate"] > 0.65  # measured 74.4% with this seed
    five = simulate(CFG, effect_sigmas=-5.0, sigma=SIGMA, experiments=2000, baseline_commits=10, seed=10)
    assert five["keep_rate"] > 0.90  # measured 94.5% with this seed


def test_a_worse_change_is_never_kept():
    r = simulate(CFG, effect_sigmas=+2.0, sigma=SIGMA, experiments=500, baseline_commits=5, seed=11)
    assert r["keep_rate"] == 0.0


# ----------------------------------------------------------------------------------------------
# staleness


def _baseline_rec(i, commit, at):
    req = RunRequest(experiment_id=f"b{i}", role="baseline", commit=commit, train_py="", preset="cpu", seed=0)
    return ExperimentRecord(
        id=f"b{i}",
        kind="baseline",
        parent_commit=commit,
        preset="cpu",
        runner="local",
        created_at=at,
        finished_at=at,
        runs=[RunOutcome(request=req, runner="local", metrics=RunMetrics(status="ok", val_bpb=1))],
    )


def test_baseline_staleness(tmp_path):
    t0 = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
    cfg = Config(judge=JudgeConfig(baseline_max_age_hours=24, baseline_max_experiments=3))
    ledger = Ledger(tmp_path / "l.jsonl")
    assert "no baseline" in baseline_staleness(ledger, "aaa", cfg, now=t0)
    ledger.append(_baseline_rec(0, "aaa", t0))
    assert not baseline_is_stale(ledger, "aaa", cfg, now=t0 + timedelta(hours=23))
    assert "h old" in baseline_staleness(ledger, "aaa", cfg, now=t0 + timedelta(hours=25))
    assert baseline_is_stale(ledger, "aaa", cfg, runner="modal", now=t0)  # other runner: none measured
    for i in range(3):
        ledger.append(
            ExperimentRecord(
                id=f"e{i}",
                parent_commit="aaa",
                preset="cpu",
                runner="local",
                created_at=t0 + timedelta(minutes=10 + i),
            )
        )
    assert "3 experiments judged" in baseline_staleness(ledger, "aaa", cfg, now=t0 + timedelta(hours=1))
    ledger.append(_baseline_rec(1, "aaa", t0 + timedelta(hours=2)))  # re-measured: fresh again
    assert not baseline_is_stale(ledger, "aaa", cfg, now=t0 + timedelta(hours=3))
