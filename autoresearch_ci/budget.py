"""Hard spending caps, checked from the ledger before a tick spends anything.

The ledger records what each experiment and baseline actually cost (LLM tokens, GPU seconds,
dollars). `check()` adds what the tick plans to spend, priced at its worst case (every run taking
the preset's hard deadline), to what today (UTC) and this tick have already spent, and refuses when
any cap would be exceeded. The caps are outside the agent: it cannot talk its way past them.

Prices: LLM $/MTok from [llm] in the config; GPU $/hour per Modal GPU type from [budget]
gpu_usd_per_hour (defaults from third-party copies of modal.com/pricing, 2026: H100 $3.95/h, see
config.py), and local_usd_per_hour for a local or self-hosted runner.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import date, datetime

from pydantic import BaseModel
from tabulate import tabulate

from autoresearch_ci.config import Config, LLMConfig
from autoresearch_ci.records import ExperimentRecord, LLMUsage, utcnow
from harness.protocol import hard_deadline_seconds


class Spend(BaseModel):
    llm_tokens: int = 0
    gpu_seconds: float = 0.0
    usd: float = 0.0
    records: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(
            llm_tokens=self.llm_tokens + other.llm_tokens,
            gpu_seconds=self.gpu_seconds + other.gpu_seconds,
            usd=self.usd + other.usd,
            records=self.records + other.records,
        )


class BudgetDecision(BaseModel):
    ok: bool
    reason: str
    table: str  # markdown, for the job summary
    today: Spend
    tick: Spend
    planned: Spend
    run_seconds: float  # the worst-case device time of one planned run
    runs_affordable: int | None  # how many runs today's GPU and dollar caps still allow (None: no cap)


# ----------------------------------------------------------------------------------------------
# prices


def llm_cost_usd(usage: LLMUsage, llm: LLMConfig) -> float:
    return (
        usage.input_tokens * llm.input_usd_per_mtok
        + usage.output_tokens * llm.output_usd_per_mtok
        + usage.cache_read_input_tokens * llm.cache_read_usd_per_mtok
        + usage.cache_creation_input_tokens * llm.cache_write_usd_per_mtok
    ) / 1e6


def gpu_usd_per_hour(cfg: Config, runner: str | None = None) -> float:
    """What an hour of the runner's device costs. Modal GPU strings may carry a count and a pin
    ("H100:2", "H100!"). A Modal GPU type with no price is an error, so a cap in dollars is never
    silently unenforced."""
    runner = runner or cfg.runner
    if runner != "modal":
        return cfg.budget.local_usd_per_hour
    name, _, count = cfg.modal.gpu.partition(":")
    prices = {k.upper(): v for k, v in cfg.budget.gpu_usd_per_hour.items()}
    price = prices.get(name.rstrip("!").upper())
    if price is None or (count and not count.isdigit()):
        raise ValueError(
            f"no price for Modal GPU {cfg.modal.gpu!r}: add it to [budget] gpu_usd_per_hour in "
            f"autoresearch.toml (known: {', '.join(cfg.budget.gpu_usd_per_hour)})"
        )
    return price * int(count or 1)


def gpu_usd_per_second(cfg: Config, runner: str | None = None) -> float:
    return gpu_usd_per_hour(cfg, runner) / 3600.0


def run_seconds_estimate(cfg: Config, runner: str | None = None) -> float:
    """The most device time one run can take: the harness's hard deadline for the preset (start-up
    allowance + budget + grace + evaluation), plus on Modal the margin its function timeout allows."""
    seconds = hard_deadline_seconds(cfg.preset)
    if (runner or cfg.runner) == "modal":
        seconds += cfg.modal.timeout_margin_seconds
    return seconds


def planned_llm_usd(cfg: Config, tokens: int) -> float:
    """Tokens planned for a tick, priced as input, except up to max_output_tokens at the output price."""
    out = min(tokens, cfg.llm.max_output_tokens)
    return ((tokens - out) * cfg.llm.input_usd_per_mtok + out * cfg.llm.output_usd_per_mtok) / 1e6


# ----------------------------------------------------------------------------------------------
# spend


def _when(r: ExperimentRecord) -> datetime:
    return r.finished_at or r.created_at


def record_spend(r: ExperimentRecord, cfg: Config | None = None) -> Spend:
    """One record's spend. With cfg, dollars are at least what the config's prices give, so a
    record written without a cost still counts against the dollar cap."""
    usd = r.cost_usd
    if cfg is not None:
        try:
            estimate = r.gpu_seconds * gpu_usd_per_second(cfg, r.runner) + llm_cost_usd(r.llm, cfg.llm)
        except ValueError:  # an old record from a GPU type no longer priced: trust what it says
            estimate = 0.0
        usd = max(usd, estimate)
    return Spend(llm_tokens=r.llm.total_tokens(), gpu_seconds=r.gpu_seconds, usd=usd, records=1)


def spent(
    records: Iterable[ExperimentRecord],
    *,
    day: date | None = None,
    tick: str | None = None,
    cfg: Config | None = None,
) -> Spend:
    """What the records of one UTC day (by finish time) and/or one tick spent."""
    total = Spend()
    for r in records:
        if day is not None and _when(r).date() != day:
            continue
        if tick is not None and r.tick != tick:
            continue
        total = total + record_spend(r, cfg)
    return total


# ----------------------------------------------------------------------------------------------
# the check


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "no cap"
    if unit == "$":
        return f"${x:,.2f}"
    return f"{x:,.0f}{unit}"


def check(
    cfg: Config,
    ledger,
    planned_runs: int,
    planned_llm_tokens: int,
    *,
    now: datetime | None = None,
    tick: str | None = None,
    runner: str | None = None,
) -> BudgetDecision:
    """May this tick spend `planned_runs` harness runs and `planned_llm_tokens` LLM tokens?

    `ledger` is a Ledger or a list of records."""
    records = ledger.records() if hasattr(ledger, "records") else list(ledger)
    now = now or utcnow()
    b = cfg.budget
    today = spent(records, day=now.date(), cfg=cfg)
    this_tick = spent(records, tick=tick, cfg=cfg) if tick else Spend()
    per_run = run_seconds_estimate(cfg, runner)
    rate = gpu_usd_per_second(cfg, runner)
    planned = Spend(
        llm_tokens=planned_llm_tokens,
        gpu_seconds=planned_runs * per_run,
        usd=planned_runs * per_run * rate + planned_llm_usd(cfg, planned_llm_tokens),
    )

    rows, problems = [], []

    def row(name: str, done: float, plan: float, cap: float | None, unit: str = "") -> None:
        after = done + plan
        left = None if cap is None else cap - after
        rows.append(
            [
                name,
                _fmt(done, unit),
                _fmt(plan, unit),
                _fmt(cap, unit),
                "" if left is None else _fmt(left, unit),
            ]
        )
        if cap is not None and after > cap:
            problems.append(
                f"{name} would reach {_fmt(after, unit)}, over the cap of {_fmt(cap, unit)} "
                f"({_fmt(done, unit)} spent + {_fmt(plan, unit)} planned)"
            )

    row("LLM tokens this tick", this_tick.llm_tokens, planned.llm_tokens, b.llm_tokens_per_tick)
    row("LLM tokens today", today.llm_tokens, planned.llm_tokens, b.llm_tokens_per_day)
    row("GPU seconds today", today.gpu_seconds, planned.gpu_seconds, b.gpu_seconds_per_day, " s")
    row("dollars today", today.usd, planned.usd, b.usd_per_day, "$")

    affordable: list[int] = []
    if b.gpu_seconds_per_day is not None:
        affordable.append(math.floor(max(0.0, b.gpu_seconds_per_day - today.gpu_seconds) / per_run))
    if b.usd_per_day is not None and rate > 0:
        left = b.usd_per_day - today.usd - planned_llm_usd(cfg, planned_llm_tokens)
        affordable.append(math.floor(max(0.0, left) / (per_run * rate)))
    table = tabulate(
        rows, headers=["budget", "spent", "planned (worst case)", "cap", "left after"], tablefmt="github"
    )
    if problems:
        reason = "over budget: " + "; ".join(problems)
    else:
        reason = (
            f"within budget: {planned_runs} run(s) of at most {per_run:,.0f} s and "
            f"{planned_llm_tokens:,} LLM tokens fit today's caps"
        )
    return BudgetDecision(
        ok=not problems,
        reason=reason,
        table=table,
        today=today,
        tick=this_tick,
        planned=planned,
        run_seconds=per_run,
        runs_affordable=min(affordable) if affordable else None,
    )
