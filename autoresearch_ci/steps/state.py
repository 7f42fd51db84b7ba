"""What one step of a tick hands the next: tick.json (the plan), guard.json (the guard command's
verdicts, from the job that may run candidate code) and results.json (the runs).

All plain JSON so CI jobs can pass them on as artifacts; their shape is a contract between the
jobs of one tick, like the ledger's records are between ticks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pydantic import BaseModel, Field

from autoresearch_ci.records import Candidate, Proposal, RunOutcome

# progress(text): a line for whoever watches a step run (the loop's status bar, the CI job's log).
Progress = Callable[[str], None]


def quiet(_: str) -> None:
    pass


class PlannedCandidate(BaseModel):
    experiment_id: str
    proposal: Proposal
    patch: str = ""
    guard_ok: bool = False
    guard_reasons: list[str] = Field(default_factory=list)
    candidate: Candidate | None = None
    # The guard command has yet to run on it (in a job without secrets: steps/guard.py); until
    # guard.json says it passed, it is not trained, and the judge leaves it for the next tick.
    guard_pending: bool = False
    # An earlier tick's candidate that never got a result, trained again in this one (steps/settle.py):
    # that tick's id. The judge replaces its earlier infra-error record.
    carried_from: str | None = None


class TickState(BaseModel):
    tick_id: str
    base_commit: str
    preset: str
    runner: str
    forge: str
    base_files: dict[str, str]
    baseline_seeds_needed: list[int] = Field(default_factory=list)  # the first round's base runs
    baseline_cutoff: datetime | None = None  # base runs that finished before it are stale (baselines.cutoff)
    candidates: list[PlannedCandidate] = Field(default_factory=list)
    actions_run_url: str | None = None
    run_id: str | None = None  # the Actions run that planned it (ids are derived from it: settle.TickIds)

    def runnable(self) -> list[PlannedCandidate]:
        return [c for c in self.candidates if c.guard_ok and c.candidate is not None and not c.guard_pending]

    def apply_guard(self, results: GuardResults | None) -> None:
        """Take in the guard command's verdicts. A candidate still pending afterwards (the guard
        job did not run or did not finish) stays pending: not trained, not judged."""
        for c in self.candidates:
            got = results.results.get(c.experiment_id) if results is not None else None
            if not c.guard_pending or got is None:
                continue
            c.guard_pending = False
            if not got.ok:
                c.guard_ok = False
                c.guard_reasons.append(f"guard command failed: {got.tail[-500:]}")


class GuardOutcome(BaseModel):
    ok: bool
    tail: str = ""


class GuardResults(BaseModel):
    tick_id: str
    results: dict[str, GuardOutcome] = Field(default_factory=dict)


class TickResults(BaseModel):
    tick_id: str
    outcomes: list[RunOutcome] = Field(default_factory=list)

    def for_experiment(self, experiment_id: str, role: str | None = None) -> list[RunOutcome]:
        return [
            o
            for o in self.outcomes
            if o.request.experiment_id == experiment_id and (role is None or o.request.role == role)
        ]
