"""The local runner: the real harness on the tiny preset, and fakes for what the harness must not do.

Fast tests replace the interpreter with a tiny shell script (the `python` parameter), so a hung or
failing "harness" costs nothing. The slow ones run `python -m harness run` for real.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from autoresearch_ci.records import RunRequest
from autoresearch_ci.runners.local import LocalRunner
from autoresearch_ci.runners.process import harness_env, is_secret_name, without_secrets

REPO = Path(__file__).resolve().parents[1]


def request(train_py: str, preset: str = "tiny", seed: int = 0, eid: str = "t-1") -> RunRequest:
    return RunRequest(
        experiment_id=eid, role="candidate", commit="0" * 40, train_py=train_py, preset=preset, seed=seed
    )


def fake_python(tmp_path: Path, body: str, name: str = "fakepy") -> str:
    """An executable that stands in for the interpreter: `<it> -m harness run ...` runs `body`."""
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(p)


def honest_train_py() -> str:
    return (REPO / "train.py").read_text(encoding="utf-8")


# -- the environment ------------------------------------------------------------------------------


def test_scrub_env_drops_credentials_and_keeps_the_rest():
    env = {
        "FAKE_TOKEN": "x", "GITHUB_TOKEN": "x", "GITHUB_REPOSITORY": "o/r", "ANTHROPIC_API_KEY": "x",
        "ANTHROPIC_BASE_URL": "x", "MODAL_TOKEN_ID": "x", "MODAL_TOKEN_SECRET": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "MY_SECRET_THING": "x", "db_password": "x", "ACTIONS_ID_TOKEN_REQUEST_URL": "x", "SSH_KEY": "x",
        "PATH": "/usr/bin", "HOME": "/root", "AUTORESEARCH_CACHE": "/c", "OMP_NUM_THREADS": "2", "LANG": "C",
    }  # fmt: skip
    kept = without_secrets(env)
    assert set(kept) == {"PATH", "HOME", "AUTORESEARCH_CACHE", "OMP_NUM_THREADS", "LANG"}
    assert is_secret_name("fake_token") and not is_secret_name("TOKENIZERS_PARALLELISM")


def test_harness_env_puts_the_trusted_root_first_and_scrubs_extras(tmp_path):
    env = harness_env(
        tmp_path, {"PYTHONPATH": "/elsewhere", "PATH": "/bin"}, EXTRA_KEY="k", AUTORESEARCH_CACHE="/c"
    )
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/elsewhere"]
    assert "EXTRA_KEY" not in env and env["AUTORESEARCH_CACHE"] == "/c"


def test_the_harness_keeps_its_state_apart_from_a_read_only_data_cache(tmp_path, monkeypatch):
    """AUTORESEARCH_STATE moves what trusted harness processes write between runs (bytecode, compile
    caches) away from the data, which may then be mounted read-only; by default both share one root.
    A state that cannot be made still gives an environment: Python then writes no bytecode at all."""
    from harness import compile_cache
    from harness.protocol import cache_root_dir, state_root

    data, state = tmp_path / "data", tmp_path / "state"
    env = harness_env(tmp_path, {"PATH": "/bin"}, AUTORESEARCH_CACHE=str(data), AUTORESEARCH_STATE=str(state))
    assert (
        Path(env["PYTHONPYCACHEPREFIX"]).is_relative_to(state) and Path(env["PYTHONPYCACHEPREFIX"]).is_dir()
    )
    assert not data.exists()
    assert state_root({"AUTORESEARCH_CACHE": str(data)}) == cache_root_dir({"AUTORESEARCH_CACHE": str(data)})
    monkeypatch.delenv("AUTORESEARCH_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("AUTORESEARCH_STATE", str(state))
    assert compile_cache.partition("a" * 64) == state / "compile" / compile_cache.LAYOUT / ("a" * 64)
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = harness_env(tmp_path, {"PATH": "/bin"}, AUTORESEARCH_STATE=str(blocker / "state"))
    assert env["PYTHONPYCACHEPREFIX"].startswith(str(blocker))


# -- infrastructure failures, with a fake harness ---------------------------------------------------


def test_hung_harness_is_killed_by_the_hard_timeout_and_retried_as_infra(tmp_path):
    pids = tmp_path / "pids"
    # The fake harness starts a child (its "worker") and hangs; both must die with the timeout.
    # The second child escapes into a session of its own, as the real harness's worker does.
    py = fake_python(
        tmp_path, f"sleep 300 & echo $! >> {pids}\nsetsid sleep 301 & echo $! >> {pids}\necho started\nwait"
    )
    runner = LocalRunner(REPO, python=py, timeout_s=1.0, max_infra_retries=1, backoff_s=0)
    t0 = time.monotonic()
    out = runner.run(request("print('never runs')"))
    assert time.monotonic() - t0 < 30
    assert out.metrics is None and "hung" in out.infra_error
    assert out.attempts == 2
    assert "started" in out.log_tail and "hard timeout" in out.log_tail
    for pid in pids.read_text().split():
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)  # the worker went with its harness


@pytest.mark.parametrize(
    "body, retried, words",
    [
        ("echo cache gone >&2; exit 3", True, "exit 3"),
        ("exit 0", True, "no metrics"),
        ("exit 1", True, "exited 1"),
        ("kill -9 $$", True, "signal 9"),
        ("echo usage >&2; exit 2", False, "exit 2"),
    ],
)
def test_harness_failures_are_infra_never_the_candidates(tmp_path, body, retried, words):
    runner = LocalRunner(REPO, python=fake_python(tmp_path, body), max_infra_retries=2, backoff_s=0)
    out = runner.run(request("x = 1"))
    assert out.metrics is None
    assert words in out.infra_error
    assert out.attempts == (3 if retried else 1)
    assert out.runner == "local"


def test_unreadable_metrics_are_infra(tmp_path):
    # The fake harness writes garbage where --out points
    # (${10} in `-m harness run F --preset P --seed S --out O`).
    py = fake_python(tmp_path, 'echo "{not json" > "${10}"')
    out = LocalRunner(REPO, python=py, max_infra_retries=0, backoff_s=0).run(request("x = 1"))
    assert out.metrics is None and "unreadable metrics" in out.infra_error and out.attempts == 1


def test_a_missing_interpreter_is_infra(tmp_path):
    out = LocalRunner(REPO, python=str(tmp_path / "nope"), max_infra_retries=1, backoff_s=0).run(
        request("x = 1")
    )
    assert out.metrics is None and "could not start" in out.infra_error and out.attempts == 2


def test_the_fake_harness_gets_the_documented_command_and_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TOKEN", "hunter2")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_x")
    seen = tmp_path / "seen"
    py = fake_python(
        tmp_path,
        f'echo "$@" > {seen}; env >> {seen}; pwd >> {seen}; cat "$4" >> {seen}\n'
        'printf \'{"status": "ok", "val_bpb": 1.5}\' > "${10}"',
    )
    progress: list[str] = []
    runner = LocalRunner(
        REPO,
        python=py,
        env={"AUTORESEARCH_CACHE": str(tmp_path / "c")},
        progress=lambda r, line: progress.append(line),
    )
    out = runner.run(request("print('the candidate')", seed=7))
    assert out.metrics is not None and out.metrics.status == "ok" and out.metrics.val_bpb == 1.5
    text = seen.read_text()
    args = text.splitlines()[0].split()
    assert args[:3] == ["-m", "harness", "run"] and args[3].endswith("/train.py")
    assert args[4:8] == ["--preset", "tiny", "--seed", "7"] and args[8] == "--out"
    assert "hunter2" not in text and "ghp_x" not in text
    assert f"AUTORESEARCH_CACHE={tmp_path / 'c'}" in text
    assert f"PYTHONPATH={REPO}" in text
    assert "print('the candidate')" in text
    assert out.wall_seconds > 0 and out.finished_at >= out.started_at and out.attempts == 1


def test_run_many_is_sequential_and_in_order(tmp_path):
    log = tmp_path / "log"
    py = fake_python(
        tmp_path,
        f'echo "start $8" >> {log}; sleep 0.2; echo "end $8" >> {log}\n'
        'printf \'{"status": "ok", "val_bpb": 1.0, "seed": %s}\' "$8" > "${10}"',
    )
    runner = LocalRunner(REPO, python=py, parallel=1)
    outs = runner.run_many([request("x", seed=s) for s in (3, 1, 2)])
    assert [o.request.seed for o in outs] == [3, 1, 2]
    assert [o.metrics.seed for o in outs] == [3, 1, 2]
    assert log.read_text().split("\n")[:6] == ["start 3", "end 3", "start 1", "end 1", "start 2", "end 2"]


def test_run_many_runs_side_by_side_and_keeps_the_order(tmp_path):
    """parallel=2: two runs at a time (each waits until the other has started), outcomes in order."""
    log = tmp_path / "log"
    py = fake_python(
        tmp_path,
        f'echo "start $8" >> {log}; '
        f'for i in $(seq 100); do [ "$(grep -c start {log})" -ge 2 ] && break; sleep 0.05; done; '
        f'echo "end $8" >> {log}\n'
        'printf \'{"status": "ok", "val_bpb": 1.0, "seed": %s}\' "$8" > "${10}"',
    )
    outs = LocalRunner(REPO, python=py, parallel=2).run_many([request("x", seed=s) for s in (5, 4, 9)])
    assert [o.metrics.seed for o in outs] == [5, 4, 9]
    lines = log.read_text().split()
    events = [" ".join(lines[i : i + 2]) for i in range(0, len(lines), 2)]
    assert set(events[:2]) == {"start 5", "start 4"}  # both started before either ended
    assert events.index("start 9") > min(events.index("end 5"), events.index("end 4"))


def test_slots_follow_the_clock_and_the_threads(monkeypatch):
    from types import SimpleNamespace

    from autoresearch_ci.runners import local

    presets = {
        "cpuclock": SimpleNamespace(clock="cpu", threads=1),
        "cpu4": SimpleNamespace(clock="cpu", threads=4),
        "wall": SimpleNamespace(clock="wall", threads=8),
        "old": SimpleNamespace(),  # a harness without the CPU-time clock
    }
    monkeypatch.setattr("harness.presets.get_preset", presets.__getitem__)
    assert local.default_slots("cpuclock", ncores=2) == 2
    assert local.default_slots("cpuclock", ncores=16) == 16
    assert local.default_slots("cpu4", ncores=2) == 1 and local.default_slots("cpu4", ncores=9) == 2
    assert local.default_slots("wall", ncores=64) == 1 and local.default_slots("old", ncores=64) == 1
    assert LocalRunner(REPO, parallel=3).slots("wall") == 3  # the config's parallel_runs wins


def test_the_hard_timeout_follows_the_preset():
    from harness.protocol import hard_deadline_seconds

    r = LocalRunner(REPO, timeout_margin_s=7)
    assert r.hard_timeout("tiny") == pytest.approx(hard_deadline_seconds("tiny") + 7)
    assert r.hard_timeout("cpu") == pytest.approx(hard_deadline_seconds("cpu") + 7)


# -- the real harness on the tiny preset -----------------------------------------------------------


@pytest.mark.slow
def test_an_honest_train_file_is_ok(prepared_tiny):
    out = LocalRunner(REPO).run(request(honest_train_py()))
    assert out.infra_error is None, out.log_tail
    assert out.metrics.status == "ok", out.metrics.error
    assert out.metrics.val_bpb is not None and out.metrics.val_bpb > 0
    assert out.metrics.preset == "tiny" and out.attempts == 1


@pytest.mark.slow
def test_a_crashing_train_file_is_charged_to_the_candidate(prepared_tiny):
    out = LocalRunner(REPO, max_infra_retries=2, backoff_s=0).run(
        request("raise RuntimeError('the candidate broke')\n")
    )
    assert out.infra_error is None, out.log_tail
    assert out.metrics.status == "crash"
    assert out.attempts == 1  # a candidate's crash is never retried


@pytest.mark.slow
def test_secrets_do_not_reach_train_py(prepared_tiny, monkeypatch):
    monkeypatch.setenv("FAKE_TOKEN", "hunter2")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")

    def probe(names: tuple[str, ...]) -> str:
        return (
            "import os as _os\n"
            f"_leaked = [k for k in {names!r} if k in _os.environ]\n"
            "if _leaked:\n"
            "    raise RuntimeError(f'leaked: {_leaked}')\n"
        ) + honest_train_py()

    runner = LocalRunner(REPO)
    # The control: the probe does fire for a variable that is meant to get through.
    control = runner.run(request(probe(("PATH",))))
    assert control.metrics.status == "crash" and "leaked" in control.metrics.error
    out = runner.run(request(probe(("FAKE_TOKEN", "ANTHROPIC_API_KEY"))))
    assert out.infra_error is None, out.log_tail
    # Past the probe: the run trained (ok, or a timeout on a loaded machine), it did not crash on import.
    assert out.metrics.status != "crash" and "leaked" not in str(out.metrics.error), out.metrics.error


@pytest.mark.slow
def test_a_missing_cache_is_infra_after_retries(tmp_path):
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    out = LocalRunner(REPO, max_infra_retries=2, backoff_s=0, env={"AUTORESEARCH_CACHE": str(empty)}).run(
        request("x = 1\n")
    )
    assert out.metrics is None
    assert "exit 3" in out.infra_error
    assert out.attempts == 3


@pytest.mark.slow
def test_an_unknown_preset_is_a_usage_error_not_retried(prepared_tiny):
    out = LocalRunner(REPO, max_infra_retries=2, backoff_s=0).run(request("x = 1\n", preset="no-such-preset"))
    assert out.metrics is None and "exit 2" in out.infra_error and out.attempts == 1
