"""The local runner: the locked harness in a subprocess on this machine.

Used by the embedded default (a tiny CPU preset, no accounts) and by a self-hosted GPU runner job,
where "this machine" is the GPU box. For each request, the candidate's train.py is written to a
scratch directory and `python -m harness run` is started with the harness of the main checkout
(`repo_root`), never the candidate's: the candidate's commit is never checked out here.

Runs go side by side only where they cannot take each other's budget: on a preset whose clock is
the CPU time of the training process tree, `slots` runs at a time (cores // the preset's threads per
run, or `parallel`); on a wall clock (the gpu preset, or a harness without the CPU clock) one at a
time, since two runs sharing two CPU cores (or one GPU) would each get half a machine and a
distorted result.

How an attempt is classified (process.read_result applies harness/protocol.py's exit codes, and
base.run_with_retries retries; the Modal function classifies its runs with the same code):
- exit 0 with a readable metrics.json: the candidate's result, whatever its status (ok, crash,
  timeout, nan, invalid). Charged to the candidate.
- exit 3, exit 0 without readable metrics, any other exit code, a harness killed by a signal or by
  our hard timeout, or an OSError starting it: the infrastructure failed. Retried with backoff up
  to `max_infra_retries` times, then reported as `infra_error`; never charged to the candidate.
- exit 2: our own usage error (unknown preset, bad arguments). `infra_error` at once: retrying the
  same command cannot help.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from autoresearch_ci.records import RunMetrics, RunOutcome, RunRequest
from autoresearch_ci.runners.base import (
    EventFn,
    ProgressFn,
    map_interruptible,
    metrics_from,
    run_with_retries,
)
from autoresearch_ci.runners.process import (
    AttemptFailed,
    hard_timeout_s,
    harness_command,
    harness_env,
    read_result,
    run_process,
)

TIMEOUT_MARGIN_S = 60.0  # on top of the preset's deadlines: interpreter start, imports, writing metrics
MAX_INFRA_RETRIES = 2
BACKOFF_S = 5.0  # first retry waits this long, then doubles


class LocalRunner:
    name = "local"

    def __init__(
        self,
        repo_root: str | Path,
        python: str = sys.executable,
        timeout_margin_s: float = TIMEOUT_MARGIN_S,
        max_infra_retries: int = MAX_INFRA_RETRIES,
        backoff_s: float = BACKOFF_S,
        env: Mapping[str, str] | None = None,
        *,
        timeout_s: float | None = None,
        progress: ProgressFn | None = None,
        runner_name: str | None = None,
        parallel: int | None = None,
    ):
        """
        repo_root: the main checkout whose `harness/` is run (never the candidate's tree).
        python: the interpreter that runs `-m harness` (tests pass a fake to simulate a hung harness).
        timeout_margin_s: added to the preset's startup + budget + grace + eval deadlines to get the
            hard timeout of the whole harness process.
        env: extra variables for the harness (e.g. AUTORESEARCH_CACHE), set on top of os.environ.
            Everything is scrubbed of secrets afterwards, these included.
        timeout_s: overrides the computed hard timeout (tests).
        runner_name: recorded in RunOutcome.runner; "self-hosted" when a GPU runner job uses this class.
        parallel: runs at a time; None or 0: from the machine and the preset (see `slots`).
        """
        self.repo_root = Path(repo_root).resolve()
        self.python = python
        self.timeout_margin_s = timeout_margin_s
        self.max_infra_retries = max(0, int(max_infra_retries))
        self.backoff_s = backoff_s
        self.extra_env = dict(env or {})
        self.timeout_s = timeout_s
        self.progress = progress
        self.events: EventFn | None = None  # steps/train.py sets it while it runs a round
        self.parallel = parallel or None
        if runner_name:
            self.name = runner_name

    # -- the Runner interface ---------------------------------------------------------------------

    def slots(self, preset: str) -> int:
        """Runs at a time for this preset: `parallel` when given, else cores // threads per run on a
        CPU-time clock and 1 on a wall clock (see the module docstring)."""
        if self.parallel:
            return self.parallel
        return default_slots(preset)

    def run_many(self, requests: list[RunRequest]) -> list[RunOutcome]:
        """Every request, `slots` at a time, outcomes in request order."""
        n = min(len(requests), self.slots(requests[0].preset)) if requests else 0
        if n <= 1:
            return [self.run(r) for r in requests]
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="run") as pool:
            return map_interruptible(pool, self.run, requests)

    def run(self, request: RunRequest) -> RunOutcome:
        return run_with_retries(
            request,
            self.name,
            lambda: self._attempt(request),
            max_infra_retries=self.max_infra_retries,
            backoff_s=self.backoff_s,
            progress=self.progress,
            events=self.events,
        )

    # -- one attempt ------------------------------------------------------------------------------

    def hard_timeout(self, preset: str) -> float:
        return self.timeout_s if self.timeout_s is not None else hard_timeout_s(preset, self.timeout_margin_s)

    def _attempt(self, request: RunRequest) -> tuple[RunMetrics, str, None]:
        with tempfile.TemporaryDirectory(prefix="arci-run-") as tmp:
            work = Path(tmp)
            train_file = work / "train.py"
            out = work / "metrics.json"
            train_file.write_bytes(request.train_py.encode("utf-8"))  # bytes: no newline translation
            cmd = harness_command(self.python, train_file, request.preset, request.seed, out)
            env = harness_env(self.repo_root, os.environ, **self.extra_env)
            on_line = (lambda line: self.progress(request, line)) if self.progress else None
            try:
                res = run_process(
                    cmd, cwd=work, env=env, timeout_s=self.hard_timeout(request.preset), on_line=on_line
                )
            except OSError as e:
                raise AttemptFailed(f"could not start the harness: {e}") from None
            data = read_result(res, out)
            return metrics_from(data, res.log_tail), res.log_tail, None


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_slots(preset: str, ncores: int | None = None) -> int:
    """cores // threads per run on a CPU-time clock; 1 on a wall clock (or a harness without one)."""
    from harness.presets import get_preset

    p = get_preset(preset)
    if getattr(p, "clock", "wall") != "cpu":
        return 1
    return max(1, (ncores or cores()) // max(1, int(getattr(p, "threads", 1) or 1)))
