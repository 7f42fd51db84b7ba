"""The runner contract, written once: what a run request becomes, and how an attempt is retried.

`local` runs `python -m harness run` in a subprocess on this machine (also what a self-hosted GPU
runner job uses); `modal` runs the same harness inside a Modal function with a GPU. Both share:

- the harness's rules (exit codes, hard deadline, the reason for a run without a result): written in
  harness/protocol.py and applied in process.py, for the local runner and inside the Modal container;
- `metrics_from`: a metrics.json becomes RunMetrics, or an infrastructure failure;
- `run_with_retries`: the one attempt loop. A failure of the infrastructure (preemption, a Modal
  error, a harness exit code of 3, a hung harness) is retried with exponential backoff and, when
  the retries are spent, reported as `infra_error`: never charged to the candidate. The candidate's
  own crash, OOM, NaN or timeout is a normal result with that status, never retried.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from concurrent.futures import wait as futures_wait
from typing import Protocol, TypeVar

from pydantic import ValidationError

from autoresearch_ci.records import RunMetrics, RunOutcome, RunRequest, utcnow
from autoresearch_ci.retry import retrying
from autoresearch_ci.runners.process import AttemptFailed

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

# progress(request, line): every line a run prints (and the runner's own notes), as they come. Drive
# a progress bar or a console from it; exceptions it raises are swallowed.
ProgressFn = Callable[[RunRequest, str], None]
# events(request, outcome): a run starting (outcome None) and ending (its outcome), as they happen, from
# the runner's threads. The train step turns them into one line each for people (a CI log, a pipe);
# exceptions it raises are swallowed.
EventFn = Callable[[RunRequest, "RunOutcome | None"], None]
# attempt() -> (metrics, log tail, device seconds if the machine measured them), or AttemptFailed.
AttemptFn = Callable[[], tuple[RunMetrics, str, float | None]]


class Runner(Protocol):
    name: str

    def run_many(self, requests: list[RunRequest]) -> list[RunOutcome]:
        """Run every request (in parallel where the backend can) and return one outcome each,
        in the same order. Never raises for a candidate's failure or an exhausted retry budget."""


def metrics_from(data: object, log_tail: str = "", seconds: float | None = None) -> RunMetrics:
    """A metrics.json object as RunMetrics: the candidate's result, whatever its status; or
    AttemptFailed when it does not validate or the harness itself reported an infra_error."""
    try:
        metrics = RunMetrics.model_validate(data)
    except ValidationError as e:
        raise AttemptFailed(
            f"unreadable metrics: {str(e)[:300]}", log_tail=log_tail, seconds=seconds
        ) from None
    if metrics.status == "infra_error":
        raise AttemptFailed(
            f"the harness reported infra_error: {metrics.error}", log_tail=log_tail, seconds=seconds
        )
    return metrics


def is_retryable(e: BaseException) -> bool:
    return isinstance(e, AttemptFailed) and e.retry


def _tell(progress: ProgressFn | None, request: RunRequest, line: str) -> None:
    log.info("%s/%s: %s", request.experiment_id, request.role, line)
    if progress is not None:
        with contextlib.suppress(Exception):  # a broken progress bar must not break the run
            progress(request, line)


def _event(events: EventFn | None, request: RunRequest, outcome: RunOutcome | None) -> RunOutcome | None:
    if events is not None:
        with contextlib.suppress(Exception):
            events(request, outcome)
    return outcome


@contextlib.contextmanager
def watching(runner: object, events: EventFn) -> Iterator[bool]:
    """Route the start and end of every run to `events` while the block runs; yields whether the
    runner (or one it wraps, through `.inner`) reports them. A runner without `events` (a test's
    stand-in) reports nothing: the caller prints its outcomes when they come back instead."""
    target = runner
    while not hasattr(target, "events") and hasattr(target, "inner"):
        target = target.inner
    if not hasattr(target, "events"):
        yield False
        return
    before = target.events
    target.events = events
    try:
        yield True
    finally:
        target.events = before


def map_interruptible(pool: Executor, fn: Callable[[T], R], items: list[T], poll_s: float = 0.5) -> list[R]:
    """`pool.map(fn, items)` as a list, in order, with the waiting thread waking every `poll_s`.

    A cancelled CI job gets SIGINT (the train command turns SIGTERM into the same). The kernel may
    deliver it to any thread; Python runs the handler in the main thread only when that thread runs
    bytecode, so a main thread blocked without a timeout on a run that lasts minutes would never
    raise KeyboardInterrupt. Waking it lets the caller cancel what is in flight within `poll_s`."""
    futures = [pool.submit(fn, x) for x in items]
    while futures_wait(futures, timeout=poll_s).not_done:
        pass
    return [f.result() for f in futures]


def run_with_retries(
    request: RunRequest,
    runner: str,
    attempt: AttemptFn,
    *,
    max_infra_retries: int,
    backoff_s: float,
    progress: ProgressFn | None = None,
    events: EventFn | None = None,
) -> RunOutcome:
    """Attempt `request` until it gives metrics, retrying infrastructure failures; never raises.

    wall_seconds is the device time of every attempt: the machine's own measurement where it
    reported one (a Modal container), else the attempt's duration here. The outcome's log tail
    carries one note per failed attempt before the last attempt's output."""
    started = utcnow()
    _event(events, request, None)
    held = 0.0
    notes: list[str] = []
    attempts = 0
    try:
        for retry_state in retrying(max_infra_retries, backoff_s, is_retryable):
            with retry_state:
                attempts += 1
                t0 = time.monotonic()
                try:
                    metrics, tail, seconds = attempt()
                except AttemptFailed as e:
                    held += e.seconds if e.seconds is not None else time.monotonic() - t0
                    notes.append(f"[runner] attempt {attempts}: infrastructure: {e.reason}")
                    log.warning(
                        "run %s attempt %d: infrastructure: %s", request.experiment_id, attempts, e.reason
                    )
                    _tell(progress, request, notes[-1])
                    raise
                held += seconds if seconds is not None else time.monotonic() - t0
    except AttemptFailed as e:
        failed = RunOutcome(
            request=request,
            runner=runner,
            metrics=None,
            infra_error=f"{e.reason} (after {attempts} attempt{'s' if attempts > 1 else ''})",
            attempts=attempts,
            wall_seconds=held,
            started_at=started,
            finished_at=utcnow(),
            log_tail="\n".join(x for x in [*notes, e.log_tail] if x),
        )
        _event(events, request, failed)
        return failed
    _tell(progress, request, f"done: {metrics.status} val_bpb={metrics.val_bpb}")
    outcome = RunOutcome(
        request=request,
        runner=runner,
        metrics=metrics,
        attempts=attempts,
        wall_seconds=held,
        started_at=started,
        finished_at=utcnow(),
        log_tail="\n".join(x for x in [*notes, tail] if x),
    )
    _event(events, request, outcome)
    return outcome


def all_failed(requests: list[RunRequest], runner: str, why: str) -> list[RunOutcome]:
    """An infrastructure failure before any attempt: every request gets it, none is charged."""
    now = utcnow()
    return [
        RunOutcome(request=r, runner=runner, infra_error=why, attempts=0, started_at=now, finished_at=now)
        for r in requests
    ]
