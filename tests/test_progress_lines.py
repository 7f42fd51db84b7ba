"""Progress a person sees in any output: a line per run as it starts and as it ends, written and
flushed as it happens, in a pipe or a CI log as on a terminal (not everything at the end)."""

from __future__ import annotations

import subprocess
import sys
import threading

from autoresearch_ci.records import RunMetrics, RunRequest
from autoresearch_ci.runners.base import run_with_retries
from autoresearch_ci.steps.train import _run_round


def request(eid: str, role: str, seed: int) -> RunRequest:
    return RunRequest(
        experiment_id=eid, role=role, commit="c" * 40, train_py="x = 1\n", preset="tiny", seed=seed
    )


class SteppedRunner:
    """Runs its requests one by one, each only when the test lets it: so the test can look at the
    lines printed while a round is still running, as a person watching a CI log would."""

    name = "stepped"

    def __init__(self):
        self.events = None
        self.go = threading.Semaphore(0)

    def run_many(self, requests):
        def attempt(r):
            self.go.acquire()
            return (
                RunMetrics(
                    status="ok", val_bpb=1.7 + r.seed / 10, preset=r.preset, device="cpu", seed=r.seed
                ),
                "",
                38.0,
            )

        return [
            run_with_retries(
                r, self.name, lambda r=r: attempt(r), max_infra_retries=0, backoff_s=0, events=self.events
            )
            for r in requests
        ]


class Wrapper:
    """A runner that wraps another (as runners/deadline.py's Within does)."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name

    def run_many(self, requests):
        return self.inner.run_many(requests)


def wait_for(lines, n):
    for _ in range(2000):
        if len(lines) >= n:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"expected {n} lines, have {lines}")


def test_each_run_is_reported_when_it_starts_and_when_it_ends():
    runner = SteppedRunner()
    reqs = [request("t1", "baseline", 0), request("e1", "candidate", 0), request("e1", "candidate", 1)]
    lines: list[str] = []
    box = {}
    t = threading.Thread(target=lambda: box.update(out=_run_round(Wrapper(runner), reqs, lines.append)))
    t.start()
    wait_for(lines, 1)
    assert lines == ["  run 1/3: baseline seed 0: started"]  # the round is under way, and it shows
    runner.go.release()
    wait_for(lines, 3)
    assert lines[1] == "  run 1/3: baseline seed 0: 38 s, val_bpb 1.7000"
    assert lines[2] == "  run 2/3: e1 seed 0: started"
    runner.go.release()
    runner.go.release()
    t.join(10)
    assert lines[3:] == [
        "  run 2/3: e1 seed 0: 38 s, val_bpb 1.7000",
        "  run 3/3: e1 seed 1: started",
        "  run 3/3: e1 seed 1: 38 s, val_bpb 1.8000",
    ]
    assert [o.request.seed for o in box["out"]] == [0, 0, 1]
    assert runner.events is None  # the hook is the round's only


def test_a_runner_that_cannot_report_gets_its_lines_when_the_round_ends():
    class Plain:
        name = "plain"

        def run_many(self, requests):
            m = RunMetrics(status="crash", preset="tiny", device="cpu", seed=0, error="boom")
            return [
                run_with_retries(r, self.name, lambda: (m, "", 2.0), max_infra_retries=0, backoff_s=0)
                for r in requests
            ]

    lines: list[str] = []
    _run_round(Plain(), [request("e1", "candidate", 0)], lines.append)
    assert lines == ["  run 1/1: e1 seed 0: 2 s, crash"]


def test_the_console_flushes_each_line_into_a_pipe():
    """The CLI's console in a pipe (no terminal): a line is readable while the process still runs."""
    code = (
        "from autoresearch_ci.cli import console; import time; "
        "console.print('round 1: started'); time.sleep(600)"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()  # would block until exit if the line sat in a buffer
        assert line.strip() == "round 1: started"
        assert p.poll() is None
    finally:
        p.kill()
        p.wait()


def test_a_signal_that_lands_on_another_thread_still_interrupts_a_round(sigint_raises):
    """A cancelled CI job gets SIGINT; the kernel may hand it to any thread. The thread waiting on
    the round must still raise KeyboardInterrupt while the runs are in flight (so they can be
    cancelled), not only when they end minutes later."""
    import signal
    from concurrent.futures import ThreadPoolExecutor

    from autoresearch_ci.runners.base import map_interruptible

    release = threading.Event()  # the runs in flight: they end only when released
    watchdog = threading.Timer(60, release.set)  # ends the runs if the interrupt never comes
    watchdog.start()

    def run(x):
        release.wait()
        return x

    # The SIGINT goes to the timer's own thread, not to the thread that waits on the round.
    interrupter = threading.Timer(0.3, lambda: signal.pthread_kill(threading.get_ident(), signal.SIGINT))
    interrupted_in_flight = None
    with ThreadPoolExecutor(max_workers=2) as pool:
        interrupter.start()
        try:
            map_interruptible(pool, run, [1, 2])
        except KeyboardInterrupt:
            interrupted_in_flight = not release.is_set()
        finally:
            release.set()
            watchdog.cancel()
    assert interrupted_in_flight is True
