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
from harness.protocol import hard_deadline_seconds
assert m.GPU == "L4" and m.function_timeout_s("gpu", 300) == int(hard_deadline_seconds("gpu") + 300)
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
    from harness.protocol import hard_deadline_seconds

    r = ModalRunner(timeout_margin_s=300, modal_retries=1, queue_allowance_s=600)
    assert r.function_timeout("gpu") == int(hard_deadline_seconds("gpu") + 300)
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
    outs = runner(call).run_many(reqs)
    assert [o.request.seed for o in outs] == list(range(6))
    assert [o.metrics.val_bpb for o in outs] == [float(s) for s in range(6)]
    assert peak[0] > 1  # not one after another (counted, not timed: a busy machine is slower)


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


# -- bounded waits, and nothing left running ------------------------------------------------------


class BlockingCall(FakeCall):
    """A call that runs until it is cancelled (or its get() times out), like a GPU run still going."""

    def __init__(self, object_id):
        super().__init__()
        self.object_id = object_id
        self.cancel_event = threading.Event()
        self.waited = []

    def get(self, timeout=None):
        self.waited.append(timeout)
        if not self.cancel_event.wait(timeout):
            raise TimeoutError()
        raise mx.RemoteError("cancelled")

    def cancel(self, terminate_containers=False):
        self.cancelled = terminate_containers
        self.cancel_event.set()


def test_no_wait_outlasts_the_deadline_and_what_is_left_is_cancelled_not_retried(tmp_path):
    blocking = BlockingCall("fc-1")
    fn = FakeFunction([blocking])
    r = ModalRunner(backoff_s=0, max_infra_retries=2, prepare=False, calls_file=tmp_path / "calls.jsonl")
    r.deadline = time.monotonic() + 30.5  # CANCEL_MARGIN_S (30) before it: half a second of waiting
    t0 = time.monotonic()
    out = runner(r._real_call(fn), max_infra_retries=2)
    out.deadline = r.deadline
    (res,) = out.run_many([request()])
    assert time.monotonic() - t0 < 5
    assert res.metrics is None and "time limit" in res.infra_error and res.attempts == 1  # not retried
    assert blocking.waited and blocking.waited[0] <= 0.5 + 0.01  # get() was cut at the deadline
    assert blocking.cancelled is True  # the GPU run was cancelled, containers too
    assert [json.loads(x)["call_id"] for x in (tmp_path / "calls.jsonl").read_text().splitlines()] == ["fc-1"]


def test_after_the_deadline_no_call_starts():
    r = runner(lambda p, t: pytest.fail("called"), max_infra_retries=2)
    r.deadline = time.monotonic() + 1  # already inside the cancel margin
    (res,) = r.run_many([request()])
    assert res.attempts == 1 and "time limit" in res.infra_error


def test_an_interrupted_dispatch_cancels_every_call_in_flight(sigint_raises):
    """SIGINT (GitHub's first signal to a step of a cancelled or timed-out job; the train command turns
    SIGTERM into the same) interrupts the dispatch: every call still running is cancelled, containers
    too, before the exception goes on."""
    import signal as sig

    calls = [BlockingCall("fc-a"), BlockingCall("fc-b")]
    fn = FakeFunction(list(calls))
    r = ModalRunner(backoff_s=0, max_infra_retries=0, prepare=False)
    r._call = r._real_call(fn)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), sig.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            r.run_many([request(seed=0), request(seed=1)])
    finally:
        timer.cancel()
    assert [c.cancelled for c in calls] == [True, True] and r._inflight == {}


def test_cancel_calls_from_the_journal(tmp_path):
    from autoresearch_ci.runners.modal_calls import cancel_calls, read_call_ids

    journal = tmp_path / "calls.jsonl"
    journal.write_text('{"call_id": "fc-a"}\n{"call_id": "fc-b"}\nnot json\n{"call_id": "fc-a"}\n')
    assert read_call_ids(journal) == ["fc-a", "fc-b"]
    assert read_call_ids(tmp_path / "none.jsonl") == []
    seen = []

    class Ref:
        def __init__(self, cid):
            self.cid = cid

        def cancel(self, terminate_containers=False):
            if self.cid == "fc-b":
                raise mx.NotFoundError("gone")
            seen.append((self.cid, terminate_containers))

    assert cancel_calls(read_call_ids(journal), from_id=Ref) == ["fc-a"]
    assert seen == [("fc-a", True)]


def _standin_env(tmp_path: Path, **config) -> dict:
    d = tmp_path / "modal"
    d.mkdir(exist_ok=True)
    cfg = {"token_id": "ak", "token_secret": "as", "deployed": ["autoresearch-ci"], **config}
    (d / "config.json").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "GITHUB_"))}
    env.update(
        FAKE_MODAL_DIR=str(d),
        MODAL_TOKEN_ID="ak",
        MODAL_TOKEN_SECRET="as",
        PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "support" / "modal_standin"), str(REPO)]),
    )
    return env


def test_the_cancel_modal_command_cancels_what_the_journal_lists(tmp_path):
    env = _standin_env(tmp_path)
    journal = tmp_path / "calls.jsonl"
    journal.write_text('{"call_id": "fc-1"}\n{"call_id": "fc-2"}\n')
    proc = subprocess.run(
        [sys.executable, "-m", "autoresearch_ci.cli", "cancel-modal", "--calls", str(journal)],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cancelled = [json.loads(x) for x in (tmp_path / "modal" / "cancelled.jsonl").read_text().splitlines()]
    assert cancelled == [
        {"call_id": "fc-1", "terminate_containers": True},
        {"call_id": "fc-2", "terminate_containers": True},
    ]


@pytest.mark.slow
def test_sigterm_to_the_train_command_cancels_its_modal_calls(tmp_path, prepared_tiny):
    """What GitHub does to a step of a cancelled or timed-out job: SIGINT, then SIGTERM."""
    import signal as sig

    from autoresearch_ci.records import Candidate, Proposal
    from autoresearch_ci.steps.state import PlannedCandidate, TickState

    env = _standin_env(tmp_path)
    hang = "import time\ntime.sleep(120)\n"  # a run still going when the job ends
    cand = PlannedCandidate(
        experiment_id="e-1",
        proposal=Proposal(proposer="test", files={"train.py": hang + "# b\n"}, parent_commit="0" * 40),
        guard_ok=True,
        candidate=Candidate(
            experiment_id="e-1", branch="autoresearch/e-1", base_commit="0" * 40, commit="1" * 40
        ),
    )
    state = TickState(
        tick_id="t-1", base_commit="0" * 40, preset="tiny", runner="modal", forge="local",
        base_files={"train.py": hang}, baseline_seeds_needed=[0], candidates=[cand],
    )  # fmt: skip
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "autoresearch.toml").write_text('preset = "tiny"\n')
    (repo / "tick.json").write_text(state.model_dump_json())
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoresearch_ci.cli", "train", "--tick", "tick.json", "--runner", "modal",
         "--calls-file", "calls.jsonl", "--out", "results.json"],
        cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    calls = tmp_path / "modal" / "calls.jsonl"
    deadline = time.monotonic() + 60
    while not calls.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert calls.exists(), "no call was spawned"
    time.sleep(1)
    proc.send_signal(sig.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    spawned = [json.loads(x)["call_id"] for x in calls.read_text().splitlines()]
    cancelled = [
        json.loads(x)["call_id"] for x in (tmp_path / "modal" / "cancelled.jsonl").read_text().splitlines()
    ]
    assert spawned and set(spawned) <= set(cancelled)
    # The runs are spawned from threads side by side: the journal's order of two spawns need not be
    # the order in which the stand-in saw them (it was not, once, on a loaded machine).
    journal = [json.loads(x)["call_id"] for x in (repo / "calls.jsonl").read_text().splitlines()]
    assert sorted(journal) == sorted(spawned)


# -- the app: no network where candidates run, the sandbox installed, a harness probe without GPU ------


def test_the_run_function_has_no_network_and_the_image_has_bubblewrap(tmp_path):
    code = r"""
import json, modal
seen = {}
real = modal.App.function
def spy(self, *a, **kw):
    deco = real(self, *a, **kw)
    def wrap(f):
        seen[f.__name__] = {k: v for k, v in kw.items() if k in ("block_network", "gpu", "cpu")}
        return deco(f)
    return wrap
modal.App.function = spy
apt = []
real_apt = modal.Image.apt_install
def apt_spy(self, *pkgs, **kw):
    apt.extend(pkgs)
    return real_apt(self, *pkgs, **kw)
modal.Image.apt_install = apt_spy
import autoresearch_ci.runners.modal_app as m
print(json.dumps({"seen": seen, "apt": apt}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "AUTORESEARCH_MODAL_"))}
    env.update(MODAL_CONFIG_PATH=str(tmp_path / "missing.toml"), PYTHONPATH=str(REPO))
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["seen"]["run_candidate"]["block_network"] is True
    assert (
        got["seen"]["harness_info"].get("block_network") is True and "gpu" not in got["seen"]["harness_info"]
    )
    assert "block_network" not in got["seen"]["prepare_data"]  # climbmix is downloaded there
    assert "bubblewrap" in got["apt"]


def test_harness_info_reports_this_harness(prepared_tiny):
    from autoresearch_ci.runners.modal_app import harness_info
    from harness.integrity import harness_sha256

    info = json.loads(harness_info.local())
    assert info["harness_sha256"] == harness_sha256() and "isolation" in info


def test_data_preparation_is_waited_for_no_longer_than_the_deadline():
    from autoresearch_ci.runners.modal import CANCEL_MARGIN_S

    blocking = BlockingCall("fc-prepare")
    prep = FakeFunction([blocking])
    r = ModalRunner(backoff_s=0, prepare=False)
    r.deadline = time.monotonic() + CANCEL_MARGIN_S + 0.3
    from autoresearch_ci.runners.process import AttemptFailed

    with pytest.raises(AttemptFailed, match="still running on Modal") as e:
        r._prepare_remote(prep, "tiny")
    assert e.value.retry is False and blocking.cancelled is None  # left to finish for the next tick
    failed = r._prepare("tiny", lambda p: r._prepare_remote(prep, p))
    assert failed is not None and "time limit" in failed.reason  # after the deadline: no call at all


# -- the harness's state beside a read-only data volume ------------------------------------------


def test_the_state_is_shared_only_where_bubblewrap_isolates_the_candidate(tmp_path, monkeypatch):
    """A state volume that later runs read (the harness's bytecode, the compile caches) is used only
    where the candidate cannot reach it: with bubblewrap. Without it, or when it is switched off or not
    mounted, each run keeps its state to itself."""
    from autoresearch_ci.runners.modal_app import state_dir
    from harness import sandbox

    shared, private = tmp_path / "state", str(tmp_path / "private")
    shared.mkdir()
    monkeypatch.setattr(sandbox, "_PROBE", {"result": ("bwrap", "bubblewrap 0.8.0")})
    assert state_dir(private, shared_dir=str(shared), shared=True) == (
        str(shared),
        "shared: the state volume",
    )
    assert state_dir(private, shared_dir=str(shared), shared=False)[0] == private
    assert state_dir(private, shared_dir=str(tmp_path / "not-mounted"), shared=True)[0] == private
    monkeypatch.setattr(sandbox, "_PROBE", {"result": ("none", "bubblewrap cannot create namespaces")})
    where, why = state_dir(private, shared_dir=str(shared), shared=True)
    assert where == private and "no bubblewrap isolation here (bubblewrap cannot create namespaces)" in why


BODY = """
import json, sys
from autoresearch_ci.runners import modal_app
reply = modal_app.run_request(json.loads(sys.argv[1]), shared_dir=sys.argv[2])
print(json.dumps(reply))
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/usr/bin/bwrap"), reason="bubblewrap mounts the volume read-only")
def test_the_function_body_runs_with_the_data_volume_mounted_read_only(prepared_tiny, cache_dir, tmp_path):
    """The app mounts the data volume read-only where candidates run (a train.py must not alter the
    validation data). Here it is a real read-only mount (bubblewrap's --ro-bind: writes fail with
    EROFS, for root too), and the function body runs as in the container: the run is ok, its
    bytecode and compile cache go to the writable state volume, and the data volume is unchanged."""
    from harness.sandbox import probe

    state = tmp_path / "state"
    state.mkdir()

    def listing():
        return sorted(str(p.relative_to(cache_dir)) for p in cache_dir.rglob("*") if "pycache" not in p.parts)

    before = listing()
    payload = request((REPO / "train.py").read_text()).model_dump_json()
    argv = ["bwrap", "--dev-bind", "/", "/", "--ro-bind", str(cache_dir), str(cache_dir), "--",
            sys.executable, "-c", BODY, payload, str(state)]  # fmt: skip
    env = dict(os.environ, AUTORESEARCH_CACHE=str(cache_dir), PYTHONPATH=str(REPO))
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    reply = json.loads(p.stdout.strip().splitlines()[-1])
    assert reply["usage_error"] is None and reply["metrics"]["status"] == "ok", reply["log_tail"][-2000:]
    expected = "shared: the state volume" if probe()[0] == "bwrap" else "private: no bubblewrap"
    assert reply["harness_state"].startswith(expected)
    if expected.startswith("shared"):
        # the sandboxes' bytecode, compiled once per install, went to the (new) state volume
        assert list((state / "pycache").glob("*/.warm-*")) and "bytecode_warm_seconds" in reply["metrics"]
    assert listing() == before  # nothing was written to the data volume
    probe_ro = subprocess.run(
        argv[: argv.index("--") + 1] + ["touch", str(cache_dir / "x")], capture_output=True, text=True
    )
    assert "Read-only file system" in probe_ro.stderr  # and it was read-only indeed
