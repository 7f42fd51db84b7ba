"""Budget: spend from the ledger, worst-case plans, and refusals that say which cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from autoresearch_ci import budget
from autoresearch_ci.config import Config, load_config
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.records import ExperimentRecord, LLMUsage

NOW = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)


def rec(i, at=NOW, tokens=0, gpu=0.0, usd=0.0, tick=None, runner="modal") -> ExperimentRecord:
    return ExperimentRecord(
        id=f"r{i}",
        parent_commit="p",
        preset="gpu",
        runner=runner,
        created_at=at,
        finished_at=at,
        tick=tick,
        gpu_seconds=gpu,
        cost_usd=usd,
        llm=LLMUsage(input_tokens=tokens),
    )


def cfg(**budget_kw) -> Config:
    return load_config(
        "/nonexistent",
        {"preset": "gpu", "runner": "modal", **{f"budget.{k}": v for k, v in budget_kw.items()}},
    )


def test_prices():
    c = Config()
    usage = LLMUsage(
        input_tokens=1_000_000,
        output_tokens=100_000,
        cache_read_input_tokens=2_000_000,
        cache_creation_input_tokens=400_000,
    )
    assert budget.llm_cost_usd(usage, c.llm) == pytest.approx(3.0 + 1.5 + 0.6 + 1.5)
    assert budget.gpu_usd_per_hour(c, "modal") == pytest.approx(3.95)  # Modal H100
    assert budget.gpu_usd_per_hour(c, "local") == 0.0
    with pytest.raises(ValueError, match="no price for Modal GPU 'B200'"):
        budget.gpu_usd_per_hour(load_config("/nonexistent", {"modal.gpu": "B200"}), "modal")
    for gpu, price in (("h100", 3.95), ("H100!", 3.95), ("H100:2", 7.90), ("A100-80GB", 2.50)):
        assert budget.gpu_usd_per_hour(
            load_config("/nonexistent", {"modal.gpu": gpu}), "modal"
        ) == pytest.approx(price)
    priced = load_config("/nonexistent", {"modal.gpu": "B200", "budget.gpu_usd_per_hour": {"B200": 6.25}})
    assert budget.gpu_usd_per_hour(priced, "modal") == 6.25
    assert priced.budget.gpu_usd_per_hour["H100"] == pytest.approx(3.95)  # added to, not replaced


def test_run_seconds_is_the_hard_deadline():
    from harness.presets import get_preset
    from harness.protocol import HARNESS_OVERHEAD_S

    c = cfg()
    p = get_preset("gpu")
    # gpu preset: start-up allowance + budget + grace + evaluation + the harness's own overhead ...
    local = p.startup_allowance_seconds + p.budget_seconds + p.grace_seconds + p.eval_timeout_seconds
    local += HARNESS_OVERHEAD_S
    assert budget.run_seconds_estimate(c, runner="local") == local
    # ... plus, on Modal, the margin its function timeout allows
    assert budget.run_seconds_estimate(c) == local + c.modal.timeout_margin_seconds


def test_spent_today_and_tick():
    records = [
        rec(0, at=NOW - timedelta(days=1), tokens=10_000, gpu=1000, usd=5),  # yesterday
        rec(1, at=NOW.replace(hour=0, minute=1), tokens=20_000, gpu=600, usd=1, tick="t1"),
        rec(2, tokens=5_000, gpu=300, usd=0.5, tick="t2"),
    ]
    today = budget.spent(records, day=NOW.date())
    assert (today.llm_tokens, today.gpu_seconds, today.records) == (25_000, 900, 2)
    assert today.usd == pytest.approx(1.5)
    assert budget.spent(records, tick="t2").llm_tokens == 5_000


def test_dollars_never_undercounted_when_a_record_lacks_its_cost():
    c = cfg()
    s = budget.spent([rec(0, gpu=3600, usd=0.0)], day=NOW.date(), cfg=c)
    assert s.usd == pytest.approx(3.95)


def test_within_budget(tmp_path):
    ledger = Ledger(tmp_path / "l.jsonl")
    ledger.append(rec(0, tokens=100_000, gpu=1000, usd=2))
    d = budget.check(cfg(), ledger, planned_runs=3, planned_llm_tokens=50_000, now=NOW)
    assert d.ok and d.reason.startswith("within budget")
    run = budget.run_seconds_estimate(cfg())
    assert d.planned.gpu_seconds == 3 * run
    assert d.runs_affordable == int((4 * 3600 - 1000) // run)
    assert "| GPU seconds today" in d.table and "| budget" in d.table


@pytest.mark.parametrize(
    "field,value,runs,tokens,needle",
    [
        (
            "llm_tokens_per_tick",
            40_000,
            0,
            50_000,
            lambda run: "LLM tokens this tick would reach 50,000, over the cap of 40,000",
        ),
        (
            "llm_tokens_per_day",
            120_000,
            0,
            50_000,
            lambda run: "LLM tokens today would reach 150,000, over the cap of 120,000",
        ),
        # one run is budgeted at the harness's hard deadline (`run` seconds, on a $3.95/h H100)
        (
            "gpu_seconds_per_day",
            3000,
            3,
            0,
            lambda run: f"GPU seconds today would reach {1000 + 3 * run:,.0f} s, over the cap of 3,000 s",
        ),
        (
            "usd_per_day",
            3.0,
            3,
            0,
            lambda run: f"dollars today would reach ${2 + 3 * run * 3.95 / 3600:.2f}, over the cap of $3.00",
        ),
    ],
)
def test_each_cap_refuses(field, value, runs, tokens, needle):
    needle = needle(budget.run_seconds_estimate(cfg()))
    records = [rec(0, tokens=100_000, gpu=1000, usd=2)]
    d = budget.check(cfg(**{field: value}), records, planned_runs=runs, planned_llm_tokens=tokens, now=NOW)
    assert not d.ok and d.reason.startswith("over budget") and needle in d.reason, d.reason


def test_gpu_cap_message_has_numbers():
    run = budget.run_seconds_estimate(cfg())
    cap = int(1000 + 1.5 * run)  # room for one more run, not two
    d = budget.check(
        cfg(gpu_seconds_per_day=cap), [rec(0, gpu=1000)], planned_runs=2, planned_llm_tokens=0, now=NOW
    )
    assert not d.ok
    assert (
        f"GPU seconds today would reach {1000 + 2 * run:,.0f} s, over the cap of {cap:,} s "
        f"(1,000 s spent + {2 * run:,.0f} s planned)" in d.reason
    )
    assert d.runs_affordable == 1


def test_no_cap_means_unlimited():
    d = budget.check(
        cfg(
            gpu_seconds_per_day="unlimited",
            usd_per_day="unlimited",
            llm_tokens_per_day="none",
            llm_tokens_per_tick="Unlimited",
        ),
        [rec(0, gpu=10**7, tokens=10**9, usd=10**5)],
        planned_runs=100,
        planned_llm_tokens=10**8,
        now=NOW,
    )
    assert d.ok and d.runs_affordable is None and "no cap" in d.table


def test_tick_rerun_counts_what_it_already_spent():
    records = [rec(0, tokens=250_000, tick="t7")]
    d = budget.check(cfg(), records, planned_runs=0, planned_llm_tokens=100_000, now=NOW, tick="t7")
    assert not d.ok and "LLM tokens this tick would reach 350,000" in d.reason
    d = budget.check(cfg(), records, planned_runs=0, planned_llm_tokens=100_000, now=NOW, tick="t8")
    assert d.ok


def test_local_runner_costs_nothing_by_default():
    c = load_config("/nonexistent", {"preset": "cpu"})
    d = budget.check(c, [], planned_runs=4, planned_llm_tokens=0, now=NOW)
    assert d.ok and d.planned.usd == 0.0 and d.runs_affordable == int(4 * 3600 // d.run_seconds)
