"""Run `python -m harness run` as a child process and read what it says: the command, an environment
without secrets, a hard timeout, and the exit-code rules of harness/protocol.py applied once.

Shared by the local runner (on this machine or a self-hosted GPU runner) and by the Modal function
(inside the container), so both start the harness and read its result the same way. Standard
library (and harness.protocol) only: the Modal image imports this module and carries no pydantic.

Three things this module guarantees whoever calls it:
- no secret reaches the training process: `without_secrets` drops tokens, keys and the
  GitHub / Anthropic / Modal variables before the harness starts (the harness's worker inherits it);
- the harness comes from a trusted directory (the main checkout, or /root in the container): the
  child runs in a scratch directory holding only the candidate's train.py, with the trusted
  directory first on PYTHONPATH, so nothing the candidate writes to its working directory lands in
  the repository and nothing in that directory can shadow `harness`;
- nothing outlives the run: the harness starts in its own session, and its whole process group is
  killed after it exits or when the hard timeout fires (a hung harness, or a worker that lingers);
  on a timeout, every descendant is killed too, also one in a session of its own (the harness's
  worker is), since nothing else would stop it once its harness is gone.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.protocol import EXIT_RESULT, EXIT_USAGE, exit_reason, hard_deadline_seconds, trusted_pycache_dir

# Environment variables the training process must never see. Matched case-insensitively.
SECRET_PATTERNS = (
    "*_TOKEN",
    "*_TOKEN_*",
    "*_KEY",
    "*_KEY_*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSWD*",
    "*CREDENTIAL*",
    "ANTHROPIC_*",
    "GITHUB_*",
    "MODAL_*",
    "ACTIONS_*",  # ACTIONS_RUNTIME_TOKEN, ACTIONS_ID_TOKEN_REQUEST_*: Actions' own credentials
    "AWS_*",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "HF_TOKEN",
    "WANDB_API_KEY",
)

LOG_TAIL_LINES = 60
KILL_GRACE_S = 5.0  # between SIGTERM and SIGKILL of the process group
UNKNOWN_PRESET_S = 60.0  # deadline for a preset the harness does not know: it says so at once (exit 2)


class AttemptFailed(Exception):
    """One attempt produced no result, for a reason that is not the candidate's (never charged).

    retry: whether another attempt can help (not for a usage error: the same command fails the same
    way). log_tail: what the harness printed. seconds: the device time the attempt held, when the
    machine that ran it measured it (a Modal container)."""

    def __init__(self, reason: str, *, retry: bool = True, log_tail: str = "", seconds: float | None = None):
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.log_tail = log_tail
        self.seconds = seconds


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, p) for p in SECRET_PATTERNS)


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """A copy of `env` without anything that looks like a credential: the one rule for every process
    this package starts with candidate code in it (the harness, the guard command)."""
    return {k: v for k, v in env.items() if not is_secret_name(k)}


def harness_env(
    trusted_root: str | Path, base: Mapping[str, str] | None = None, **extra: str
) -> dict[str, str]:
    """The harness's environment: `base` (default os.environ) plus `extra`, without secrets, with the
    trusted root first on PYTHONPATH so `-m harness` resolves to the main checkout's harness."""
    env = dict(os.environ if base is None else base)
    env.update(extra)
    env = without_secrets(env)
    parts = [str(trusted_root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"  # progress lines arrive as they are printed, not at exit
    env.pop("PYTHONSTARTUP", None)
    # Bytecode only from the harness's own directory, from the very first import (harness/__init__):
    # a .pyc planted beside the harness's sources is never read (harness/protocol.py).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = prefix = trusted_pycache_dir(env)
    # Set even where it cannot be made (a read-only state): Python then reads and writes no bytecode
    # at all, which is slower and as safe; the harness says so (harness/bytecode.py: ensure_warm).
    with contextlib.suppress(OSError):
        os.makedirs(prefix, mode=0o755, exist_ok=True)
    return env


def hard_timeout_s(preset_name: str, margin_s: float) -> float:
    """The longest a whole harness process may take: the preset's hard deadline (harness.protocol)
    plus a margin for the interpreter, imports and writing metrics. This outer limit only catches a
    harness that hangs itself; a preset the harness does not know gets UNKNOWN_PRESET_S."""
    try:
        return hard_deadline_seconds(preset_name) + margin_s
    except ValueError:
        return UNKNOWN_PRESET_S + margin_s


def harness_command(python: str, train_file: Path, preset: str, seed: int, out: Path) -> list[str]:
    return [
        python, "-m", "harness", "run", str(train_file),
        "--preset", preset, "--seed", str(seed), "--out", str(out),
    ]  # fmt: skip


@dataclass
class ProcResult:
    returncode: int | None  # None: it was killed by our timeout
    timed_out: bool
    seconds: float
    log_tail: str


def _descendants(pid: int) -> list[int]:
    """Every process below `pid`, at any depth, whatever session it moved to (Linux /proc; [] elsewhere).

    The harness starts its worker in a session of its own, so killing the harness's process group does
    not reach it; if the harness hangs and we kill it, its worker must be found through the process
    tree, while the harness is still alive to be its parent."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill_tree(pids: list[int]) -> None:
    """SIGKILL these processes and the process groups they lead or belong to (never our own group)."""
    own = os.getpgrp()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            pgid = os.getpgid(pid)
            if pgid != own:
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group, then SIGKILL whatever is left."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = proc.pid  # the leader is gone; its group id is still its pid
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, so a zombie does not keep the group alive
            try:
                os.killpg(pgid, 0)
            except (ProcessLookupError, PermissionError):
                return
            time.sleep(0.05)


def run_process(
    cmd: list[str],
    *,
    cwd: str | Path,
    env: Mapping[str, str],
    timeout_s: float,
    on_line: Callable[[str], None] | None = None,
) -> ProcResult:
    """Run `cmd` to completion or until `timeout_s`, streaming its merged output line by line.

    Raises OSError when the command cannot be started at all."""
    t0 = time.monotonic()
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    proc = subprocess.Popen(
        cmd,
        cwd=str(cwd),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,  # its own process group: one killpg ends the harness and its worker
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if on_line is not None:
                with contextlib.suppress(Exception):  # a broken progress bar must not break the run
                    on_line(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_tree(_descendants(proc.pid))  # the worker in its own session, and anything it started
    finally:
        _kill_group(proc)  # also after a normal exit: no stray worker survives its harness
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=KILL_GRACE_S)
    reader.join(timeout=KILL_GRACE_S)
    if timed_out:
        tail.append(f"[runner] killed the harness after the hard timeout of {timeout_s:.0f} s")
    return ProcResult(
        returncode=None if timed_out else proc.returncode,
        timed_out=timed_out,
        seconds=time.monotonic() - t0,
        log_tail="\n".join(tail),
    )


def read_result(res: ProcResult, metrics_file: Path) -> dict:
    """The metrics.json the harness wrote (a dict), or AttemptFailed saying why there is none:
    harness.protocol's exit codes (a usage error is not retried), a hang, a missing or unreadable file."""
    if res.timed_out or res.returncode != EXIT_RESULT:
        raise AttemptFailed(
            exit_reason(res.returncode, timed_out=res.timed_out, seconds=res.seconds),
            retry=res.timed_out or res.returncode != EXIT_USAGE,
            log_tail=res.log_tail,
        )
    try:
        data = json.loads(metrics_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AttemptFailed("the harness exited 0 but wrote no metrics file", log_tail=res.log_tail) from None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise AttemptFailed(
            f"unreadable metrics file: {type(e).__name__}: {str(e)[:300]}", log_tail=res.log_tail
        ) from None
    if not isinstance(data, dict):
        raise AttemptFailed("unreadable metrics file: not a JSON object", log_tail=res.log_tail)
    return data
