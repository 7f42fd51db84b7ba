"""The Modal runner: every run of a tick (baselines and candidates) at once, each on its own Modal GPU.

It calls `run_candidate` of the app beside it (runners/modal_app.py). Two ways to reach it:

- mode="deployed" (the default): `modal.Function.from_name(app_name, "run_candidate")`, the app that
  `modal deploy -m autoresearch_ci.runners.modal_app` published. The dispatching job needs only
  MODAL_TOKEN_ID / MODAL_TOKEN_SECRET, builds no image and uploads no source, and a spawned call
  lives on Modal's side (results are kept for days), not in the CI job's process.
- mode="ephemeral": `with modal_app.app.run():` around the dispatch. No deploy step, and the harness
  is mounted from this checkout at dispatch time, at the cost of an app start (and, the first
  time, an image build) per tick; the app ends with the dispatching process.

Each request is one `.spawn()` and one `FunctionCall.get(timeout=...)`, in a thread per request, so a
failed request is retried alone (base.run_with_retries) and outcomes come back in request order.
Classification:
- a returned envelope with metrics: the candidate's result, whatever its status (a crash, OOM, NaN
  or timeout on the GPU is the candidate's). Charged.
- any exception from the call: a Modal error (modal.exception.*: FunctionTimeoutError, InternalFailure,
  ConnectionError, RemoteError, ...), a container that died, a client-side get() timeout (builtin
  TimeoutError: the call is cancelled), or HarnessInfraError raised in the container for a harness
  exit 3 or a hung harness, after Modal's own retries: infrastructure. Retried here up to
  `max_infra_retries` times with exponential backoff, then `infra_error`. Never charged.
  Preemptions are retried by Modal itself and never reach us unless they repeat.
- configuration errors (AuthError, NotFoundError: the app is not deployed, InvalidError,
  PermissionDeniedError, VersionError) and a harness usage error (exit 2): `infra_error` at once.

Bounded, and nothing left running. `deadline` (a time.monotonic() value: the train job's own time
limit, less a margin) bounds every wait: a get() never waits past it, no retry starts after it, and a
run still going then is cancelled and reported as infra_error (the next tick trains it again,
steps/settle.py). Data preparation is waited for no longer either, but not cancelled: it is a CPU
call filling the shared Volume, and the next tick's runs read what it prepared. Every spawned
call's id is written to `calls_file` as it is spawned, and
`cancel_all()` cancels the calls in flight (terminate_containers=True); `run_many` does so itself when
it is interrupted (the train command turns the SIGINT/SIGTERM GitHub sends a cancelled or timed-out
job into KeyboardInterrupt), and modal_calls.cancel_calls(ids) cancels them from the journal
afterwards (the job's `if: cancelled() || failure()` step), in case the process was killed before
it could.

`call` and `prepare_call` exist only so tests can run the function bodies with `.local()`; the
product always uses the real Modal path.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

from autoresearch_ci.records import RunMetrics, RunOutcome, RunRequest
from autoresearch_ci.retry import retrying
from autoresearch_ci.runners.base import (
    EventFn,
    ProgressFn,
    all_failed,
    is_retryable,
    map_interruptible,
    run_with_retries,
)
from autoresearch_ci.runners.modal_calls import _non_retryable, describe_exception, parse_envelope
from autoresearch_ci.runners.process import AttemptFailed
from harness.protocol import hard_deadline_seconds

log = logging.getLogger(__name__)

APP_NAME = "autoresearch-ci"
MAX_INFRA_RETRIES = 2
BACKOFF_S = 30.0  # first retry waits this long, then doubles
QUEUE_ALLOWANCE_S = 1800.0  # how long a call may wait for a free GPU before we give up on the attempt
MAX_PARALLEL = 16
REDEPLOY = "modal deploy -m autoresearch_ci.runners.modal_app"
CANCEL_MARGIN_S = 30.0  # stop waiting this long before the deadline: time to cancel and write results
OUT_OF_TIME = (
    "the train job's time limit was reached before this run finished (cancelled; trained again next tick)"
)

# call(request_json, timeout_s) -> envelope_json: one blocking remote call.
CallFn = Callable[[str, float], str]
# prepare_call(preset) -> anything: makes sure the preset's data is on the volume.
PrepareFn = Callable[[str], object]


class ModalRunner:
    name = "modal"

    def __init__(
        self,
        app_name: str = APP_NAME,
        gpu: str | None = None,
        *,
        mode: Literal["deployed", "ephemeral"] = "deployed",
        environment_name: str | None = None,
        timeout_margin_s: float = 300.0,
        modal_retries: int = 1,
        max_infra_retries: int = MAX_INFRA_RETRIES,
        backoff_s: float = BACKOFF_S,
        queue_allowance_s: float = QUEUE_ALLOWANCE_S,
        max_parallel: int = MAX_PARALLEL,
        prepare: bool = True,
        check_harness: bool = True,
        call: CallFn | None = None,
        prepare_call: PrepareFn | None = None,
        progress: ProgressFn | None = None,
        deadline: float | None = None,
        calls_file: str | Path | None = None,
    ):
        """
        app_name: the deployed app (mode="deployed").
        gpu: a Modal GPU type ("H100", "A100-80GB", ...) that overrides the deployed one per call
            (Function.with_options); None keeps what was deployed.
        timeout_margin_s: the function timeout is the preset's hard deadline plus this (matches the
            app's AUTORESEARCH_MODAL_MARGIN); applied per call, so the deployed value cannot be stale.
        modal_retries: the retries the deployed function has (AUTORESEARCH_MODAL_RETRIES), used only
            to size how long get() waits.
        max_infra_retries: our retries of a request whose call failed, on top of Modal's.
        prepare: before the runs, make sure each preset's data is on the volume (prepare_data).
        check_harness: refuse a result whose harness_sha256 is not this checkout's harness: the
            deployed app is stale (someone changed harness/ and did not redeploy), and its numbers
            would not mean what main's harness means. Reported as infra_error, not retried.
        deadline: time.monotonic() past which nothing waits (see the module docstring); None: unbounded.
        calls_file: a JSON-lines journal of every spawned call's id (for cancel_calls).
        """
        if mode not in ("deployed", "ephemeral"):
            raise ValueError(f"unknown mode {mode!r}: choose deployed or ephemeral")
        self.app_name = app_name
        self.gpu = gpu
        self.mode = mode
        self.environment_name = environment_name
        self.timeout_margin_s = timeout_margin_s
        self.modal_retries = max(0, int(modal_retries))
        self.max_infra_retries = max(0, int(max_infra_retries))
        self.backoff_s = backoff_s
        self.queue_allowance_s = queue_allowance_s
        self.max_parallel = max(1, int(max_parallel))
        self.prepare = prepare
        self._prepared: set[str] = set()  # presets whose data this runner has made sure of
        self.check_harness = check_harness
        self._call = call
        self._prepare_call = prepare_call
        self.progress = progress
        self.events: EventFn | None = None  # steps/train.py sets it while it runs a round
        self.deadline = deadline
        self.calls_file = Path(calls_file) if calls_file else None
        self._inflight: dict[str, object] = {}  # object_id -> FunctionCall not yet returned
        self._lock = threading.Lock()
        self._stopping = False  # set by cancel_all: no attempt starts any more

    # -- timeouts ---------------------------------------------------------------------------------

    def function_timeout(self, preset: str) -> int:
        return int(hard_deadline_seconds(preset) + self.timeout_margin_s)

    def get_timeout(self, preset: str) -> float:
        """How long one attempt's get() waits: every Modal-side try, their delays, and a GPU queue."""
        tries = 1 + self.modal_retries
        return self.function_timeout(preset) * tries + 60.0 * self.modal_retries + self.queue_allowance_s

    def time_left(self) -> float | None:
        """Seconds a wait may still take before the deadline (less the cancel margin); None: no deadline."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic() - CANCEL_MARGIN_S

    def bounded_timeout(self, preset: str) -> float:
        left = self.time_left()
        full = self.get_timeout(preset)
        return full if left is None else min(full, left)

    # -- nothing left running ---------------------------------------------------------------------

    def _spawned(self, fc) -> None:
        with self._lock:
            self._inflight[fc.object_id] = fc
            if self.calls_file is not None:
                self.calls_file.parent.mkdir(parents=True, exist_ok=True)
                with self.calls_file.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"call_id": fc.object_id}) + "\n")

    def _returned(self, fc) -> None:
        with self._lock:
            self._inflight.pop(fc.object_id, None)

    def cancel_all(self) -> list[str]:
        """Cancel every call still in flight (their containers too), and start no other; the ids cancelled."""
        with self._lock:
            self._stopping = True
            calls = list(self._inflight.values())
            self._inflight.clear()
        done = []
        for fc in calls:
            try:
                fc.cancel(terminate_containers=True)
                done.append(fc.object_id)
            except Exception as e:  # keep cancelling the others
                log.warning("could not cancel %s: %s", fc.object_id, describe_exception(e))
        return done

    # -- the real Modal path ----------------------------------------------------------------------

    def _modal_handles(self):
        """(context, run_fn, prepare_fn): the app context to hold while calling, and the functions."""
        import modal

        if self.mode == "ephemeral":
            from autoresearch_ci.runners import modal_app

            return modal_app.app.run(), modal_app.run_candidate, modal_app.prepare_data
        lookup = dict(environment_name=self.environment_name)
        return (
            nullcontext(),
            modal.Function.from_name(self.app_name, "run_candidate", **lookup),
            modal.Function.from_name(self.app_name, "prepare_data", **lookup),
        )

    def _real_call(self, run_fn) -> CallFn:
        per_preset: dict[str, object] = {}
        lock = threading.Lock()  # one with_options (one container pool) per preset, whatever the threads do

        def fn_for(preset: str):
            with lock:
                if preset not in per_preset:
                    opts: dict = {"timeout": self.function_timeout(preset)}
                    if self.gpu:
                        opts["gpu"] = self.gpu
                    per_preset[preset] = run_fn.with_options(**opts)
                return per_preset[preset]

        def call(request_json: str, timeout_s: float) -> str:
            fn = fn_for(json.loads(request_json)["preset"])
            fc = fn.spawn(request_json)
            self._spawned(fc)
            log.info("modal call %s spawned", fc.object_id)
            try:
                return fc.get(timeout=timeout_s)
            except TimeoutError:  # builtin: get() gave up waiting; do not leave a GPU running
                try:
                    fc.cancel(terminate_containers=True)
                except Exception as e:
                    log.warning("could not cancel %s: %s", fc.object_id, e)
                raise
            finally:
                self._returned(fc)

        return call

    # -- the Runner interface ---------------------------------------------------------------------

    def run_many(self, requests: list[RunRequest]) -> list[RunOutcome]:
        if not requests:
            return []
        if self._call is not None:
            return self._dispatch(requests, self._call, self._prepare_call)
        try:
            ctx, run_fn, prep_fn = self._modal_handles()
            ctx.__enter__()  # ephemeral: starts the app (network, credentials); deployed: nothing
        except Exception as e:  # the runner reports, it does not raise
            return all_failed(requests, self.name, f"could not reach the Modal app: {describe_exception(e)}")
        try:
            return self._dispatch(
                requests, self._real_call(run_fn), lambda preset: self._prepare_remote(prep_fn, preset)
            )
        finally:
            try:
                ctx.__exit__(None, None, None)
            except Exception as e:  # the outcomes are in hand; a failed stop must not lose them
                log.warning("stopping the ephemeral Modal app failed: %s", describe_exception(e))

    def _dispatch(
        self, requests: list[RunRequest], call: CallFn, prepare_call: PrepareFn | None
    ) -> list[RunOutcome]:
        from harness.presets import get_preset

        failed_presets: dict[str, str] = {}  # preset -> why none of its runs can start
        for preset in dict.fromkeys(r.preset for r in requests):
            try:
                get_preset(preset)
            except ValueError as e:  # caught here, so no GPU container starts only to say exit 2
                failed_presets[preset] = str(e)
                continue
            if self.prepare and prepare_call is not None and preset not in self._prepared:
                err = self._prepare(preset, prepare_call)
                if err is not None:
                    failed_presets[preset] = f"data preparation failed: {err.reason}"
                else:  # once per tick: the train step calls run_many once per round of pairs
                    self._prepared.add(preset)

        def one(request: RunRequest) -> RunOutcome:
            if request.preset in failed_presets:
                return all_failed([request], self.name, failed_presets[request.preset])[0]
            return self._run_one(request, call)

        pool = ThreadPoolExecutor(max_workers=min(len(requests), self.max_parallel))
        try:
            return map_interruptible(pool, one, requests)  # in request order
        except BaseException:  # interrupted (the job is being cancelled): leave no GPU running
            cancelled = self.cancel_all()
            log.warning("interrupted: cancelled %d Modal call(s)", len(cancelled))
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=False)

    def _prepare(self, preset: str, prepare_call: PrepareFn) -> AttemptFailed | None:
        """Make sure the preset's data is on the volume (with the runs' retry policy); the failure
        that stopped it, or None."""
        try:
            for attempt in retrying(self.max_infra_retries, self.backoff_s, is_retryable):
                with attempt:
                    try:
                        prepare_call(preset)
                    except AttemptFailed:
                        raise
                    except Exception as e:
                        failure = AttemptFailed(
                            describe_exception(e), retry=not isinstance(e, _non_retryable())
                        )
                        log.warning("prepare %s failed: %s", preset, failure.reason)
                        raise failure from e
        except AttemptFailed as failure:
            return failure
        return None

    def _prepare_remote(self, prep_fn, preset: str):
        """prepare_data on Modal, waited for no longer than the deadline allows. Past it the call is
        left to finish (a CPU container filling the shared Volume, which the next tick's runs read)
        and this tick's runs of the preset fail as infrastructure."""
        left = self.time_left()
        if left is None:
            return prep_fn.remote(preset)
        if left <= 0:
            raise AttemptFailed(OUT_OF_TIME, retry=False)
        fc = prep_fn.spawn(preset)
        try:
            return fc.get(timeout=left)
        except TimeoutError:
            raise AttemptFailed(
                f"data preparation for {preset} still running on Modal when the train job's time was up "
                "(it goes on; the next tick uses it)",
                retry=False,
            ) from None

    def _check_harness(self, metrics: RunMetrics, tail: str, seconds: float | None) -> None:
        if not self.check_harness or not metrics.harness_sha256:
            return
        from harness.integrity import harness_sha256

        mine = harness_sha256()
        if metrics.harness_sha256 != mine:
            raise AttemptFailed(
                f"the Modal app runs harness {metrics.harness_sha256[:12]}, this checkout has {mine[:12]}: "
                f"redeploy it ({REDEPLOY})",
                retry=False, log_tail=tail, seconds=seconds,
            )  # fmt: skip

    def _run_one(self, request: RunRequest, call: CallFn) -> RunOutcome:
        payload = request.model_dump_json()

        def attempt() -> tuple[RunMetrics, str, float | None]:
            if self._stopping:
                raise AttemptFailed("cancelled: the train job was interrupted", retry=False)
            timeout = self.bounded_timeout(request.preset)
            if timeout <= 0:
                raise AttemptFailed(OUT_OF_TIME, retry=False)
            try:
                text = call(payload, timeout)
            except Exception as e:  # every failure of the call is the infrastructure's
                left = self.time_left()
                if left is not None and left <= 0:
                    raise AttemptFailed(f"{OUT_OF_TIME}: {describe_exception(e)}", retry=False) from e
                raise AttemptFailed(describe_exception(e), retry=not isinstance(e, _non_retryable())) from e
            metrics, tail, seconds = parse_envelope(text)
            self._check_harness(metrics, tail, seconds)
            return metrics, tail, seconds

        return run_with_retries(
            request,
            self.name,
            attempt,
            max_infra_retries=self.max_infra_retries,
            backoff_s=self.backoff_s,
            progress=self.progress,
            events=self.events,
        )
