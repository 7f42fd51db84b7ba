"""The local research loop: N ticks of propose -> train -> judge in one process, with a live display.

This is what `autoresearch-ci loop` runs on one machine with no accounts (local git, a local
process, the offline proposer). CI runs the very same three steps, one job each.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from autoresearch_ci import backends, budget
from autoresearch_ci.config import Config
from autoresearch_ci.records import ExperimentRecord
from autoresearch_ci.report.tables import loop_line
from autoresearch_ci.steps.judge import judge
from autoresearch_ci.steps.propose import propose
from autoresearch_ci.steps.train import train


def run_loop(
    cfg: Config,
    repo: Path,
    iterations: int,
    max_minutes: float | None = None,
    seed: int = 0,
    console: Console | None = None,
) -> list[ExperimentRecord]:
    console = console or Console()
    forge = backends.make_forge(cfg, repo)
    runner = backends.make_runner(cfg, repo)
    proposer = backends.make_proposer(cfg, seed=seed)
    summarizer = getattr(proposer, "summarize_for_learnings", None)
    ledger = backends.make_ledger(cfg, repo)
    written: list[ExperimentRecord] = []
    started = time.monotonic()
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting", total=iterations)

        def say(text: str) -> None:
            progress.update(task, description=text)

        def tell(text: str) -> None:  # the train step's rounds, runs and looks: kept in the log
            say(text.strip())
            console.print(text, markup=False, highlight=False)

        for i in range(iterations):
            if max_minutes is not None and (time.monotonic() - started) / 60 >= max_minutes:
                console.print(f"[yellow]stopping: the {max_minutes} min time limit is spent")
                break
            decision = budget.check(cfg, ledger, planned_runs=cfg.candidates_per_tick, planned_llm_tokens=0)
            if not decision.ok:
                console.print(f"[yellow]stopping: {decision.reason}")
                break
            say(f"iteration {i + 1}/{iterations}: proposing")
            state = propose(cfg, forge, proposer, ledger, runner.name, seed=seed + i, progress=say)
            say(f"iteration {i + 1}/{iterations}: training")
            results = train(cfg, state, runner, ledger, progress=tell)
            say(f"iteration {i + 1}/{iterations}: judging")
            records = judge(
                cfg,
                state,
                results,
                forge,
                ledger,
                summarizer=summarizer,
                progress=say,
                gpu_usd_per_second=budget.gpu_usd_per_second(cfg, runner.name),
            )
            for rec in records:
                if rec.kind == "experiment":  # an LLM's words: no markup, no highlighting
                    console.print(loop_line(rec), markup=False, highlight=False)
                else:
                    console.print(loop_line(rec))
            written.extend(records)
            progress.advance(task)
        say("done")
    return written
