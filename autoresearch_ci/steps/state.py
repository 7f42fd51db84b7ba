"""What one step of a tick hands the next: tick.json (the plan) and results.json (the runs).

Both are plain JSON so CI jobs can pass them on as artifacts; their shape is a contract between the
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

    def runnable(self) -> list[PlannedCandidate]:
        return [c for c in self.candidates if c.guard_ok and c.candidate is not None]


class TickResults(BaseModel):
    tick_id: str
    outcomes: list[RunOutcome] = Field(default_factory=list)

    def for_experiment(self, experiment_id: str, role: str | None = None) -> list[RunOutcome]:
        return [
            o
            for o in self.outcomes
            if o.request.experiment_id == experiment_id and (role is None or o.request.role == role)
        ]
