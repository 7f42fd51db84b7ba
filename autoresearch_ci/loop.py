"""The local research loop: N ticks of propose -> train -> judge in one process, with a live display.

This is what `autoresearch-ci loop` runs on one machine with no accounts (local git, a local
process, the offline proposer). CI runs the very same three steps from tick.py, one job each.
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

from autoresearch_ci import budget as budget_mod
from autoresearch_ci import tick
from autoresearch_ci.backends import make_forge, make_proposer, make_runner
from autoresearch_ci.config import Config
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.records import ExperimentRecord


def ledger_for(cfg: Config, repo: Path) -> Ledger:
    return Ledger(repo / cfg.paths.ledger)


def describe(rec: ExperimentRecord) -> str:
    v = rec.verdict
    vals = rec.ok_values()
    bpb = f"{sum(vals) / len(vals):.4f}" if vals else "-"
    delta = f"{v.delta:+.4f}" if v and v.delta is not None else "-"
    thr = f"±{v.threshold:.4f}" if v and v.threshold is not None else ""
    return (
        f"{rec.id}  {v.decision if v else '?':<15} val_bpb {bpb}  delta {delta} {thr}  {rec.hypothesis[:70]}"
    )


def run_loop(
    cfg: Config,
    repo: Path,
    iterations: int,
    max_minutes: float | None = None,
    seed: int = 0,
    console: Console | None = None,
) -> list[ExperimentRecord]:
    console = console or Console()
    forge = make_forge(cfg, repo)
    runner = make_runner(cfg, repo)
    proposer = make_proposer(cfg, seed=seed)
    summarizer = getattr(proposer, "summarize_for_learnings", None)
    ledger = ledger_for(cfg, repo)
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

        for i in range(iterations):
            if max_minutes is not None and (time.monotonic() - started) / 60 >= max_minutes:
                console.print(f"[yellow]stopping: the {max_minutes} min time limit is spent")
                break
            decision = budget_mod.check(
                cfg, ledger, planned_runs=cfg.candidates_per_tick, planned_llm_tokens=0
            )
            if not decision.ok:
                console.print(f"[yellow]stopping: {decision.reason}")
                break
            say(f"iteration {i + 1}/{iterations}: proposing")
            state = tick.propose(
                cfg, forge, proposer, ledger, runner.name, seed=seed + i, progress=say, forge_repo=repo
            )
            say(f"iteration {i + 1}/{iterations}: training")
            results = tick.train(cfg, state, runner, ledger, progress=say)
            say(f"iteration {i + 1}/{iterations}: judging")
            records = tick.judge(
                cfg, state, results, forge, ledger, repo, summarizer=summarizer, progress=say
            )
            for rec in records:
                if rec.kind == "experiment":
                    console.print(describe(rec), markup=False, highlight=False)  # an LLM's words
                else:
                    vals = rec.ok_values()
                    console.print(
                        f"baseline {rec.parent_commit[:10]}: "
                        + ", ".join(f"{x:.4f}" for x in vals)
                        + (f"  ({rec.hypothesis})" if rec.id.endswith("-base") else "")
                    )
            written.extend(records)
            progress.advance(task)
        say("done")
    return written
