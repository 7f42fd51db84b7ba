"""A runner that stops starting runs once the job it lives in would not see them finish.

A CI job has a hard time limit (`timeout-minutes`); past it GitHub kills the job, the judge never
runs, and whatever was trained is lost. `within(runner, deadline)` keeps a tick inside its job:
- a runner that bounds its own waits (ModalRunner: every get() is cut at the deadline and what is
  still running is cancelled) is handed the deadline;
- any other (the local runner of a self-hosted GPU box) is given only the runs that can finish
  before it at their worst case (the preset's hard deadline plus a margin, `parallel` at a time);
  the rest come back at once as infrastructure failures, never charged to a candidate, and the next
  tick trains them again (steps/settle.py).
"""

from __future__ import annotations

import math
import time

from autoresearch_ci.records import RunOutcome, RunRequest
from autoresearch_ci.runners.base import Runner, all_failed
from harness.protocol import hard_deadline_seconds

RUN_MARGIN_S = 90.0  # per run, on top of the harness's deadline: interpreter start, imports, data load
NOT_STARTED = "not started: it could not finish before the train job's time limit (trained again next tick)"


class Within:
    def __init__(self, inner: Runner, deadline: float, parallel: int = 1):
        self.inner = inner
        self.name = inner.name
        self.deadline = deadline
        self.parallel = max(1, parallel)

    def run_many(self, requests: list[RunRequest]) -> list[RunOutcome]:
        left = self.deadline - time.monotonic()
        fit: list[RunRequest] = []
        used = [0.0] * self.parallel  # worst-case time on each of the runner's lanes
        for r in requests:
            cost = hard_deadline_seconds(r.preset) + RUN_MARGIN_S
            lane = min(range(self.parallel), key=used.__getitem__)
            if used[lane] + cost <= left:
                used[lane] += cost
                fit.append(r)
        done = iter(self.inner.run_many(fit) if fit else [])
        late = {id(r) for r in requests} - {id(r) for r in fit}
        return [all_failed([r], self.name, NOT_STARTED)[0] if id(r) in late else next(done) for r in requests]


def within(runner: Runner, deadline: float | None) -> Runner:
    """`runner` bounded by `deadline` (a time.monotonic() value); itself when there is none."""
    if deadline is None:
        return runner
    if hasattr(runner, "deadline"):
        runner.deadline = deadline
        return runner
    return Within(runner, deadline, parallel=getattr(runner, "parallel", 1))


def minutes_from_now(minutes: float | None) -> float | None:
    return None if minutes is None or math.isinf(minutes) else time.monotonic() + minutes * 60.0
