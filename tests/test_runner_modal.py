"""The Modal runner and app, without a Modal account or network.

The app module must import offline (decorators and Volume references are lazy). The function body
runs in-process through `run_candidate.local(...)`, which is exactly what the container runs; the
runner's `call` seam replaces only the remote hop, so its retry and classification logic is the
product's. `_real_call` is exercised against a stand-in for a Modal Function.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

modal = pytest.importorskip("modal")
from modal import exception as mx  # noqa: E402

from autoresearch_ci.records import RunRequest  # noqa: E402
from autoresearch_ci.runners.modal import ModalRunner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def request(
    train_py: str = "x = 1\n", preset: str = "tiny", seed: int = 0, eid: str = "m-1", role="candidate"
):
    return RunRequest(
        experiment_id=eid, role=role, commit="0" * 40, train_py=train_py, preset=preset, seed=seed
    )


def envelope(status: str = "ok", val_bpb: float | None = 1.25, **metrics) -> str:
    return json.dumps(
        {
            "metrics": {"status": status, "val_bpb": val_bpb, **metrics},
            "usage_error": None,
            "log_tail": "harness says hi",
            "container_seconds": 12.5,
            "exit_code": 0,
        }
    )


def runner(call, **kw) -> ModalRunner:
    kw.setdefault("backoff_s", 0)
    kw.setdefault("prepare", False)
    return ModalRunner(call=call, **kw)


# -- the app module ------------------------------------------------------------------------------


def test_the_app_imports_without_network_or_credentials(tmp_path):
    code = r"""
import socket
def refuse(*a, **k):
    raise OSError("network used at import")
socket.socket.connect = refuse
socket.create_connection = refuse
import autoresearch_ci.runners.modal_app as m
import modal
assert isinstance(m.app, modal.App) and m.app.name == "autoresearch-ci"
assert isinstance(m.run_candidate, modal.Function) and isinstance(m.prepare_data, modal.Function)
assert m.GPU == "L4" and m.function_timeout_s("gpu", 300) == 300 + 90 + 300 + 15 + 180
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "AUTORESEARCH_MODAL_"))}
    env.update(
        MODAL_CONFIG_PATH=str(tmp_path / "missing.toml"), AUTORESEARCH_MODAL_GPU="L4", PYTHONPATH=str(REPO)
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")


def test_the_app_refuses_to_load_as_a_file_and_says_how():
    res = subprocess.run(
        [sys.executable, str(REPO / "autoresearch_ci" / "runners" / "modal_app.py")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode != 0 and "modal deploy -m autoresearch_ci.runners.modal_app" in res.stderr


def test_timeouts_cover_the_preset_deadline_and_the_modal_retries():
    from harness.presets import get_preset

    p = get_preset("gpu")
    r = ModalRunner(timeout_margin_s=300, modal_retries=1, queue_allowance_s=600)
    deadline = p.startup_allowance_seconds + p.budget_seconds + p.grace_seconds + p.eval_timeout_seconds
    assert r.function_timeout("gpu") == int(deadline + 300)
    assert r.get_timeout("gpu") >= 2 * r.function_timeout("gpu") + 600


# -- classification and retries, with a fake remote hop ----------------------------------------------


def test_modal_errors_are_retried_then_succeed():
    failures = [mx.InternalFailure("lost the worker"), mx.FunctionTimeoutError("Function timed out")]

    def call(payload: str, timeout: float) -> str:
        assert json.loads(payload)["preset"] == "tiny" and timeout > 0
        if failures:
            raise failures.pop(0)
        return envelope()

    out = runner(call, max_infra_retries=2).run_many([request()])[0]
    assert out.infra_error is None and out.metrics.status == "ok" and out.metrics.val_bpb == 1.25
    assert out.attempts == 3
    assert "InternalFailure" in out.log_tail and "FunctionTimeoutError" in out.log_tail
    assert out.runner == "modal"


def test_exhausted_retries_are_infra_never_the_candidates():
    calls = []

    def call(payload, timeout):
        calls.append(1)
        raise mx.ConnectionError("modal unreachable")

    out = runner(call, max_infra_retries=2).run_many([request()])[0]
    assert out.metrics is None and "ConnectionError" in out.infra_error and out.attempts == 3 == len(calls)


@pytest.mark.parametrize("exc", [mx.NotFoundError("app not deployed"), mx.AuthError("bad token")])
def test_setup_errors_are_not_retried(exc):
    def call(payload, timeout):
        raise exc

    out = runner(call, max_infra_retries=3).run_many([request()])[0]
    assert out.metrics is None and out.attempts == 1 and type(exc).__name__ in out.infra_error


@pytest.mark.parametrize(
    "reply, retried",
    [
        ("not json", True),
        (json.dumps({"metrics": None, "log_tail": ""}), True),
        (json.dumps({"metrics": {"status": "weird"}}), True),
        (envelope(status="infra_error", val_bpb=None, error="disk full"), True),
        (json.dumps({"metrics": None, "usage_error": "the harness rejected its arguments (exit 2)"}), False),
    ],
)
def test_bad_replies_are_infra(reply, retried):
    out = runner(lambda p, t: reply, max_infra_retries=1).run_many([request()])[0]
    assert out.metrics is None and out.infra_error
    assert out.attempts == (2 if retried else 1)


@pytest.mark.parametrize("status", ["crash", "timeout", "nan", "invalid"])
def test_a_candidates_own_failure_is_its_result_and_not_retried(status):
    calls = []

    def call(payload, timeout):
        calls.append(1)
        return envelope(status=status, val_bpb=None, error="boom")

    out = runner(call, max_infra_retries=2).run_many([request()])[0]
    assert out.infra_error is None and out.metrics.status == status and out.attempts == 1 == len(calls)
    assert out.wall_seconds == 12.5  # the container's own clock


def test_parallel_dispatch_returns_outcomes_in_request_order():
    running, peak, lock = [0], [0], threading.Lock()

    def call(payload, timeout):
        seed = json.loads(payload)["seed"]
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05 * (6 - seed))  # the first request finishes last
        with lock:
            running[0] -= 1
        return envelope(val_bpb=float(seed), seed=seed)

    reqs = [request(seed=s, eid=f"e{s}", role="baseline" if s < 2 else "candidate") for s in range(6)]
    t0 = time.monotonic()
    outs = runner(call).run_many(reqs)
    assert time.monotonic() - t0 < 0.05 * 21  # not one after another
    assert [o.request.seed for o in outs] == list(range(6))
    assert [o.metrics.val_bpb for o in outs] == [float(s) for s in range(6)]
    assert peak[0] > 1


def test_a_failed_data_preparation_fails_only_its_presets_runs():
    prepared = []

    def prepare(preset):
        prepared.append(preset)
        if preset == "cpu":
            raise mx.RemoteError("download failed")

    outs = runner(lambda p, t: envelope(), prepare=True, prepare_call=prepare, max_infra_retries=1).run_many(
        [request(preset="tiny"), request(preset="cpu"), request(preset="tiny", seed=1)]
    )
    assert prepared == ["tiny", "cpu", "cpu"]  # once per preset, the failing one retried
    assert outs[0].metrics.status == "ok" and outs[2].metrics.status == "ok"
    assert outs[1].metrics is None and outs[1].attempts == 0
    assert "data preparation failed" in outs[1].infra_error and "RemoteError" in outs[1].infra_error


def test_a_stale_deployed_harness_is_refused_not_retried():
    from harness.integrity import harness_sha256

    mine = harness_sha256()
    good = runner(lambda p, t: envelope(harness_sha256=mine)).run_many([request()])[0]
    assert good.metrics.status == "ok"
    stale_runner = runner(lambda p, t: envelope(harness_sha256="f" * 64), max_infra_retries=2)
    stale = stale_runner.run_many([request()])[0]
    assert stale.metrics is None and "redeploy" in stale.infra_error and stale.attempts == 1


def test_an_app_that_cannot_start_fails_every_run_without_raising(monkeypatch):
    class Refusing:
        def __enter__(self):
            raise mx.AuthError("Token missing")

        def __exit__(self, *exc):
            return False

    r = ModalRunner(mode="ephemeral", backoff_s=0)
    monkeypatch.setattr(r, "_modal_handles", lambda: (Refusing(), None, None))
    outs = r.run_many([request(), request(seed=1)])
    assert [o.attempts for o in outs] == [0, 0] and all("AuthError" in o.infra_error for o in outs)


def test_empty_request_list_touches_nothing():
    assert ModalRunner(call=lambda p, t: pytest.fail("called")).run_many([]) == []


# -- the real remote hop, against a stand-in for modal.Function --------------------------------------


class FakeCall:
    def __init__(self, reply=None, exc=None):
        self.reply, self.exc, self.cancelled, self.object_id = reply, exc, None, "fc-test"

    def get(self, timeout=None):
        if self.exc:
            raise self.exc
        return self.reply

    def cancel(self, terminate_containers=False):
        self.cancelled = terminate_containers


class FakeFunction:
    def __init__(self, calls):
        self.calls, self.options, self.spawned = calls, [], []

    def with_options(self, **kw):
        self.options.append(kw)
        return self

    def spawn(self, payload):
        fc = self.calls.pop(0)
        self.spawned.append((payload, fc))
        return fc


def test_real_call_spawns_with_per_preset_options_and_cancels_a_call_it_gave_up_on():
    stuck, ok = FakeCall(exc=TimeoutError()), FakeCall(reply=envelope())
    fn = FakeFunction([stuck, ok])
    r = ModalRunner(gpu="A100-80GB", backoff_s=0, max_infra_retries=1, prepare=False)
    call = r._real_call(fn)
    out = runner(call, max_infra_retries=1).run_many([request()])[0]
    assert out.metrics.status == "ok" and out.attempts == 2
    assert stuck.cancelled is True  # no GPU left running after get() gave up
    assert fn.options == [{"timeout": r.function_timeout("tiny"), "gpu": "A100-80GB"}]  # once per preset


# -- the function body, for real, through .local() ------------------------------------------------


def local_call(payload: str, timeout: float) -> str:
    from autoresearch_ci.runners.modal_app import run_candidate

    return run_candidate.local(payload)


@pytest.mark.slow
def test_run_candidate_local_runs_the_harness_and_returns_metrics(prepared_tiny):
    from autoresearch_ci.runners.modal_app import run_candidate

    reply = json.loads(run_candidate.local(request((REPO / "train.py").read_text()).model_dump_json()))
    assert reply["exit_code"] == 0 and reply["usage_error"] is None
    assert reply["metrics"]["status"] == "ok" and reply["metrics"]["val_bpb"] > 0
    assert reply["container_seconds"] > 0 and reply["log_tail"]


@pytest.mark.slow
def test_infra_then_success_through_the_function_body(prepared_tiny):
    failures = [mx.InternalFailure("container lost"), mx.FunctionTimeoutError("timed out")]

    def call(payload, timeout):
        if failures:
            raise failures.pop(0)
        return local_call(payload, timeout)

    out = runner(call, max_infra_retries=2).run_many([request((REPO / "train.py").read_text())])[0]
    assert out.infra_error is None, out.log_tail
    assert out.metrics.status == "ok" and out.attempts == 3


@pytest.mark.slow
def test_a_candidate_crash_on_the_gpu_is_charged(prepared_tiny):
    crashing = request("raise SystemExit('candidate dies')\n")
    out = runner(local_call, max_infra_retries=2).run_many([crashing])[0]
    assert out.infra_error is None, out.log_tail
    assert out.metrics.status == "crash" and out.attempts == 1


@pytest.mark.slow
def test_harness_exit_3_in_the_container_raises_and_is_infra(tmp_path, monkeypatch, prepared_tiny):
    from autoresearch_ci.runners.modal_app import HarnessInfraError, run_candidate

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(empty))
    with pytest.raises(HarnessInfraError, match="exit 3"):
        run_candidate.local(request().model_dump_json())
    out = runner(local_call, max_infra_retries=1).run_many([request()])[0]
    assert out.metrics is None and "HarnessInfraError" in out.infra_error and out.attempts == 2


@pytest.mark.slow
def test_a_usage_error_in_the_container_is_returned_not_raised(prepared_tiny):
    from autoresearch_ci.runners.modal_app import run_candidate

    # Raising would make Modal retry a call that fails the same way every time.
    reply = json.loads(run_candidate.local(request(preset="no-such-preset").model_dump_json()))
    assert reply["exit_code"] == 2 and "exit 2" in reply["usage_error"] and reply["metrics"] is None
    out = runner(lambda p, t: json.dumps(reply), max_infra_retries=2).run_many([request()])[0]
    assert out.metrics is None and "exit 2" in out.infra_error and out.attempts == 1


def test_an_unknown_preset_starts_no_container():
    out = runner(lambda p, t: pytest.fail("called"), max_infra_retries=2).run_many([request(preset="nope")])
    assert out[0].metrics is None and "unknown preset" in out[0].infra_error and out[0].attempts == 0


@pytest.mark.slow
def test_prepare_data_local_is_idempotent(prepared_tiny):
    from autoresearch_ci.runners.modal_app import prepare_data

    reply = json.loads(prepare_data.local("tiny"))
    assert reply["preset"] == "tiny" and reply["seconds"] >= 0
