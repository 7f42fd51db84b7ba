"""The local runner: the locked harness in a subprocess on this machine.

Used by the embedded default (a tiny CPU preset, no accounts) and by a self-hosted GPU runner job,
where "this machine" is the GPU box. For each request, the candidate's train.py is written to a
scratch directory and `python -m harness run` is started with the harness of the main checkout
(`repo_root`), never the candidate's: the candidate's commit is never checked out here.

Runs are sequential, on purpose: the budget is wall-clock time, so two runs sharing two CPU cores
(or one GPU) would each get half a machine and a distorted result.

How an attempt is classified:
- exit 0 with a readable metrics.json: the candidate's result, whatever its status (ok, crash,
  timeout, nan, invalid). Charged to the candidate.
- exit 3, exit 0 without readable metrics, any other exit code, a harness killed by a signal or by
  our hard timeout, or an OSError starting it: the infrastructure failed. Retried with backoff up
  to `max_infra_retries` times, then reported as `infra_error`; never charged to the candidate.
- exit 2: our own usage error (unknown preset, bad arguments). `infra_error` at once: retrying the
  same command cannot help.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from pydantic import ValidationError

from autoresearch_ci.records import RunMetrics, RunOutcome, RunRequest, utcnow
from autoresearch_ci.runners.base import EXIT_INFRA, EXIT_RESULT, EXIT_USAGE
from autoresearch_ci.runners.process import (
    hard_timeout_s,
    harness_command,
    harness_env,
    run_process,
)

log = logging.getLogger(__name__)

TIMEOUT_MARGIN_S = 60.0  # on top of the preset's deadlines: interpreter start, imports, writing metrics
MAX_INFRA_RETRIES = 2
BACKOFF_S = 5.0  # first retry waits this long, then doubles

# progress(request, line): every output line of the harness, as it is printed. Drive a tqdm bar or
# a rich console from it; exceptions it raises are swallowed.
ProgressFn = Callable[[RunRequest, str], None]


class AttemptFailed(Exception):
    """One attempt failed for a reason that is not the candidate's; `retry` says whether to try again."""

    def __init__(self, reason: str, *, retry: bool = True, log_tail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.log_tail = log_tail


def read_metrics(path: Path) -> RunMetrics:
    """The metrics the harness wrote, or AttemptFailed when there are none or they do not parse."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunMetrics.model_validate(data)
    except FileNotFoundError:
        raise AttemptFailed("the harness exited 0 but wrote no metrics file") from None
    except (OSError, ValueError, ValidationError) as e:  # JSONDecodeError is a ValueError
        raise AttemptFailed(f"unreadable metrics file: {type(e).__name__}: {str(e)[:300]}") from None


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
        """
        self.repo_root = Path(repo_root).resolve()
        self.python = python
        self.timeout_margin_s = timeout_margin_s
        self.max_infra_retries = max(0, int(max_infra_retries))
        self.backoff_s = backoff_s
        self.extra_env = dict(env or {})
        self.timeout_s = timeout_s
        self.progress = progress
        if runner_name:
            self.name = runner_name

    # -- the Runner interface ---------------------------------------------------------------------

    def run_many(self, requests: list[RunRequest]) -> list[RunOutcome]:
        return [self.run(r) for r in requests]  # sequential: see the module docstring

    def run(self, request: RunRequest) -> RunOutcome:
        started = utcnow()
        t0 = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                metrics, tail = self._attempt(request)
            except AttemptFailed as e:
                log.warning(
                    "run %s attempt %d: infrastructure: %s", request.experiment_id, attempts, e.reason
                )
                if e.retry and attempts <= self.max_infra_retries:
                    time.sleep(self.backoff_s * 2 ** (attempts - 1))
                    continue
                return RunOutcome(
                    request=request,
                    runner=self.name,
                    metrics=None,
                    infra_error=f"{e.reason} (after {attempts} attempt{'s' if attempts > 1 else ''})",
                    attempts=attempts,
                    wall_seconds=time.monotonic() - t0,
                    started_at=started,
                    finished_at=utcnow(),
                    log_tail=e.log_tail,
                )
            return RunOutcome(
                request=request,
                runner=self.name,
                metrics=metrics,
                attempts=attempts,
                wall_seconds=time.monotonic() - t0,
                started_at=started,
                finished_at=utcnow(),
                log_tail=tail,
            )

    # -- one attempt ------------------------------------------------------------------------------

    def hard_timeout(self, preset: str) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        try:
            return hard_timeout_s(preset, self.timeout_margin_s)
        except ValueError:  # unknown preset: the harness will say so with exit 2
            return 60.0 + self.timeout_margin_s

    def _attempt(self, request: RunRequest) -> tuple[RunMetrics, str]:
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
            if res.timed_out:
                raise AttemptFailed(
                    f"the harness hung: killed after {res.seconds:.0f} s (hard timeout)",
                    log_tail=res.log_tail,
                )
            if res.returncode == EXIT_USAGE:
                raise AttemptFailed(
                    "the harness rejected its arguments (exit 2)", retry=False, log_tail=res.log_tail
                )
            if res.returncode == EXIT_INFRA:
                raise AttemptFailed(
                    "the harness reported an infrastructure failure (exit 3)", log_tail=res.log_tail
                )
            if res.returncode != EXIT_RESULT:
                how = f"killed by signal {-res.returncode}" if res.killed else f"exited {res.returncode}"
                raise AttemptFailed(f"the harness {how}", log_tail=res.log_tail)
            try:
                metrics = read_metrics(out)
            except AttemptFailed as e:
                e.log_tail = res.log_tail
                raise
            if metrics.status == "infra_error":
                raise AttemptFailed(
                    f"the harness reported infra_error: {metrics.error}", log_tail=res.log_tail
                )
            return metrics, res.log_tail
