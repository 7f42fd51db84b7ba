"""The parent process of a run: the clock, the deadlines and metrics.json. It never runs train.py.

    python -m harness run TRAIN_FILE --preset NAME --out metrics.json [--seed N] [--device D]

1. Resolve the preset (unknown: exit 2), open and verify the data cache (missing or corrupt: exit 3,
   naming `python -m harness prepare`), hash the harness and train.py.
2. Start the worker (harness/worker.py) in a new session, with an allowlisted environment (no
   secrets), its output going to a log file, and an event pipe.
3. Timestamp the worker's events with this process's monotonic clock and enforce the deadlines:
   the clock starts at the worker's `clock_started` or when the start-up allowance runs out,
   whichever is first; training must end by clock start + budget + grace; evaluation must end
   within eval_timeout of `train_done`. Past a deadline the whole process group is SIGKILLed and the
   status is "timeout". training_seconds = t(train_done) - t(clock start), on this clock.
4. After the worker is gone: re-hash the harness and the validation files (a change: "invalid"),
   write metrics.json atomically, print a summary line.

Exit codes: 0 a result (whatever its status), 2 usage, 3 infrastructure (metrics still written,
status "infra_error"): the runner retries 3 and never charges the candidate for it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import os
import platform
import secrets
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.integrity import HARNESS_DIR, file_sha256, harness_sha256, scrub_env
from harness.protocol import EXIT_INFRA, EXIT_RESULT, EXIT_USAGE, METRIC_KEYS, STATUSES

POLL_S = 0.2
EXIT_WAIT_S = 10.0  # after the result: how long the worker may take to exit before it is killed
LOG_TAIL_LINES = 40
MAX_EVENT_BYTES = 1 << 20  # a line longer than this on the event pipe is tampering
EVENT_ORDER = {"ready": 0, "clock_started": 1, "progress": 1, "train_done": 2, "result": 3}


@dataclass
class Deadlines:
    """The deadline arithmetic, on the supervisor's monotonic clock (pure, unit-tested)."""

    spawn: float
    allowance: float
    budget: float
    grace: float
    eval_timeout: float
    clock_event: float | None = None  # when the worker said clock_started
    train_done: float | None = None

    @property
    def implicit_start(self) -> float:
        return self.spawn + self.allowance

    def clock_start(self, now: float) -> float | None:
        """When the training clock started, as of `now` (None: not yet)."""
        if self.clock_event is not None:
            return min(self.clock_event, self.implicit_start)
        return self.implicit_start if now >= self.implicit_start else None

    def next_deadline(self) -> tuple[float, str]:
        """(time, which) of the deadline now in force."""
        if self.train_done is None:
            start = self.clock_event if self.clock_event is not None else self.implicit_start
            return min(start, self.implicit_start) + self.budget + self.grace, "training"
        return self.train_done + self.eval_timeout, "evaluation"

    def training_seconds(self, now: float) -> float | None:
        """Clock start to train_done (or to `now` while training is still going on)."""
        end = self.train_done if self.train_done is not None else now
        start = self.clock_start(end)
        if start is None:
            return 0.0  # train() returned before the clock ever started
        return max(0.0, end - start)

    def describe(self, which: str) -> str:
        if which == "training":
            how = (
                "the worker's clock_started"
                if self.clock_event is not None and self.clock_event <= self.implicit_start
                else f"the start-up allowance of {self.allowance:g} s running out"
            )
            return (
                f"timeout: training did not end by its deadline: the clock started at {how}, and the "
                f"budget of {self.budget:g} s plus {self.grace:g} s grace ran out"
            )
        return f"timeout: evaluation did not finish within {self.eval_timeout:g} s of the end of training"


def blank_metrics(preset: str | None, seed: int | None) -> dict:
    m = dict.fromkeys(METRIC_KEYS)
    m.update(preset=preset, seed=seed, python_version=platform.python_version())
    return m


def write_metrics(out: Path, metrics: dict) -> None:
    """Atomic: a reader sees the old file or the whole new one, never half of it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(metrics, indent=1, sort_keys=False, default=str) + "\n")
    os.replace(tmp, out)


def worker_env(base: dict | None = None) -> dict:
    """The worker's environment: the allowlisted part of ours, with this harness first on PYTHONPATH."""
    env = scrub_env(os.environ if base is None else base)
    root = str(HARNESS_DIR.parent)
    parts = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _tail_lines(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-n:])


def _killpg(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _Run:
    """One supervised worker: the event loop and what it learned."""

    def __init__(
        self, proc: subprocess.Popen, rfd: int, dl: Deadlines, log_path: Path, echo: bool, nonce: str
    ):
        self.proc, self.rfd, self.dl, self.log_path, self.echo = proc, rfd, dl, log_path, echo
        self.nonce = nonce
        self.buf = b""
        self.eof = False
        self.events: dict[str, float] = {}
        self.ready: dict | None = None
        self.result: dict | None = None
        self.infra: str | None = None
        self.tamper: list[str] = []
        self.progress: dict = {}
        self.timeout: str | None = None
        self.rusage = None
        self.wait_status: int | None = None
        self._log_pos = 0
        self._last_order = -1

    # -- events -----------------------------------------------------------------------------------

    def _on_line(self, line: bytes, now: float) -> None:
        try:
            ev = json.loads(line)
            name = ev["event"]
        except (ValueError, KeyError, TypeError):
            self.tamper.append("a malformed line on the harness's event pipe")
            return
        if not hmac.compare_digest(str(ev.pop("n", "")), self.nonce):
            self.tamper.append(f"a forged {name!r} event on the harness's event pipe")
            return
        if name == "infra_error" and self.ready is None:
            self.infra = str(ev.get("error"))
            return
        if name not in EVENT_ORDER:
            self.tamper.append(f"an unexpected event {name!r} on the harness's event pipe")
            return
        order = EVENT_ORDER[name]
        if (name != "progress" and name in self.events) or order < self._last_order:
            self.tamper.append(f"event {name!r} out of order or repeated on the harness's event pipe")
            return
        self._last_order = max(self._last_order, order)
        if name == "progress":
            self.progress = ev
            return
        self.events[name] = now
        if name == "ready":
            self.ready = ev
        elif name == "clock_started":
            self.dl.clock_event = now
        elif name == "train_done":
            self.dl.train_done = now
            self.progress.update(ev)
        elif name == "result":
            self.result = ev

    def _read_events(self, now: float) -> None:
        try:
            chunk = os.read(self.rfd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.eof = True
            return
        self.buf += chunk
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line.strip():
                self._on_line(line, now)
        if len(self.buf) > MAX_EVENT_BYTES:
            self.tamper.append("an oversized line on the harness's event pipe")
            self.buf = b""

    def _echo_log(self) -> None:
        if not self.echo:
            return
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_pos)
                data = f.read(1 << 20)
        except OSError:
            return
        if data:
            self._log_pos += len(data)
            sys.stdout.buffer.write(data)
            sys.stdout.flush()

    def _reap(self, block: bool = False) -> bool:
        """Collect the worker's exit status and resource usage (ru_maxrss) once it has exited."""
        try:
            pid, status, rusage = os.wait4(self.proc.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False
        self.wait_status, self.rusage = status, rusage
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return True

    # -- the loop ---------------------------------------------------------------------------------

    def loop(self) -> None:
        while True:
            now = time.monotonic()
            if self.result is not None:
                deadline, which = self.events["result"] + EXIT_WAIT_S, "exit"
            else:
                deadline, which = self.dl.next_deadline()
            if now >= deadline:
                if which != "exit":
                    self.timeout = self.dl.describe(which)
                _killpg(self.proc.pid)
                self._reap(block=True)
                self._drain(time.monotonic())
                break
            wait = max(0.0, min(POLL_S, deadline - now))
            if not self.eof:
                r, _, _ = select.select([self.rfd], [], [], wait)
                if r:
                    self._read_events(time.monotonic())
            else:
                time.sleep(wait)
            self._echo_log()
            if self._reap():
                self._drain(time.monotonic())
                break
        _killpg(self.proc.pid)  # whatever train.py may have started in the worker's session
        self._echo_log()

    def _drain(self, now: float) -> None:
        while not self.eof:
            r, _, _ = select.select([self.rfd], [], [], 0)
            if not r:
                break
            self._read_events(now)


def run(
    train_file: str | os.PathLike,
    preset_name: str,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    device: str | None = None,
    log_path: str | os.PathLike | None = None,
    echo: bool = True,
) -> int:
    """Run one training + evaluation of `train_file` and write `out`. Returns the exit code."""
    t_begin = time.monotonic()
    out = Path(out)
    log_path = Path(log_path) if log_path else out.with_suffix(".log")
    from harness.data import CacheError, load_prepared, prepare_command
    from harness.presets import UnknownPresetError, get_preset

    metrics = blank_metrics(preset_name, seed)

    def finish(code: int, **fields) -> int:
        metrics.update(fields)
        metrics["total_seconds"] = round(time.monotonic() - t_begin, 3)
        write_metrics(out, metrics)
        _summary(metrics)
        return code

    try:
        preset = get_preset(preset_name)
    except UnknownPresetError as e:
        print(f"harness: {e}", file=sys.stderr)
        return finish(EXIT_USAGE, status="infra_error", error=f"usage: {e}")
    train_path = Path(train_file).resolve()
    if not train_path.is_file():
        print(f"harness: no such train file: {train_file}", file=sys.stderr)
        return finish(EXIT_USAGE, status="infra_error", error=f"usage: no such train file: {train_file}")
    metrics["device"] = device or preset.device
    metrics["harness_sha256"] = h_before = harness_sha256()
    metrics["train_sha256"] = file_sha256(train_path)
    try:
        data = load_prepared(preset, verify=True)
    except CacheError as e:
        print(f"harness: {e}", file=sys.stderr)
        return finish(EXIT_INFRA, status="infra_error", error=f"infra: {e}")
    except Exception as e:  # a cache we cannot even read: the same remedy
        msg = f"cannot open the prepared data ({type(e).__name__}: {e}): run `{prepare_command(preset)}`"
        print(f"harness: {msg}", file=sys.stderr)
        return finish(EXIT_INFRA, status="infra_error", error=f"infra: {msg}")
    metrics["data_fingerprint"] = data.fingerprint
    metrics["data_source"] = data.source
    val_hashes = {n: data.manifest["files"][n]["sha256"] for n in ("val.bin", "token_bytes.npy")}

    # -- the worker ------------------------------------------------------------------------------
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    spawn = time.monotonic()
    nonce = secrets.token_hex(16)
    spec = {
        "train_file": str(train_path), "preset": preset.name, "seed": int(seed), "device": device,
        "event_fd": wfd, "spawn_time": spawn, "data_dir": str(data.dir), "nonce": nonce,
    }  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as logf:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "harness.worker"],
                stdin=subprocess.PIPE, stdout=logf, stderr=subprocess.STDOUT, pass_fds=(wfd,),
                env=worker_env(), start_new_session=True, close_fds=True,
            )  # fmt: skip
        except OSError as e:
            os.close(rfd)
            os.close(wfd)
            return finish(EXIT_INFRA, status="infra_error", error=f"infra: could not start the worker: {e}")
    os.close(wfd)
    try:
        proc.stdin.write((json.dumps(spec) + "\n").encode())
        proc.stdin.close()
    except OSError:
        pass  # the worker died at once: the loop below sees it exit without a `ready`
    dl = Deadlines(spawn, preset.startup_allowance_seconds, preset.budget_seconds, preset.grace_seconds,
                   preset.eval_timeout_seconds)  # fmt: skip
    r = _Run(proc, rfd, dl, log_path, echo, nonce)
    try:
        r.loop()
    finally:
        _killpg(proc.pid)
        os.close(rfd)
    end = time.monotonic()

    # -- what happened ---------------------------------------------------------------------------
    tail = _tail_lines(log_path)
    res = r.result or {}
    metrics["log_path"] = str(log_path)
    metrics["log_tail"] = tail
    if r.ready:
        v = r.ready.get("versions") or {}
        dev = r.ready.get("device")
        metrics.update(torch_version=v.get("torch"), numpy_version=v.get("numpy"), cuda_version=v.get("cuda"),
                       device=dev, gpu_name=r.ready.get("gpu_name"))  # fmt: skip
        metrics["device_name"] = r.ready.get("gpu_name") if str(dev).startswith("cuda") else _cpu_name()
    start = dl.clock_start(end)
    if dl.train_done is not None:
        metrics["training_seconds"] = round(dl.training_seconds(end), 3)
    elif start is not None:  # killed or crashed while training: the time it had
        metrics["training_seconds"] = round(end - start, 3)
    code = EXIT_RESULT
    if r.infra is not None or (r.ready is None and r.timeout is None):
        why = r.infra or f"the worker exited before the harness was set up (exit {proc.returncode})\n{tail}"
        status, error, code = "infra_error", f"infra: {why}", EXIT_INFRA
    elif r.tamper:
        status, error = "invalid", f"invalid: {r.tamper[0]} (train.py may not use the harness's channels)"
    elif r.timeout is not None:
        status, error = "timeout", f"{r.timeout}; the process group was killed\n{tail}"
    elif r.result is not None:
        status, error = res.get("status"), res.get("error")
        if status not in STATUSES:
            status, error = "invalid", f"invalid: the worker reported an unknown status {status!r}"
        if status == "infra_error":
            code = EXIT_INFRA
    else:
        rc = proc.returncode
        how = f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with code {rc}"
        hint = " (SIGKILL: possibly out of memory)" if rc == -signal.SIGKILL else ""
        status, error = "crash", f"crash: the training process {how}{hint} without a result\n{tail}"

    # -- checks that need no trust in the worker ----------------------------------------------------
    if harness_sha256() != h_before:
        status, error, code = "invalid", "invalid: the harness files changed during the run", EXIT_RESULT
    changed = [n for n, h in val_hashes.items() if not _same_hash(data.dir / n, h)]
    if changed:
        status, error, code = "invalid", f"invalid: {', '.join(changed)} changed during the run", EXIT_RESULT

    copied = (
        "val_bpb", "val_loss", "num_params", "flops_per_token", "eval_tokens", "eval_bytes", "eval_batches",
        "probe", "flops_note", "last_train_loss", "violations", "foreign_audit_hooks",
    )  # fmt: skip
    for k in copied:
        if k in res:
            metrics[k] = res[k]
    if status != "ok":
        metrics["val_bpb"] = None
    if "num_steps" in res:
        metrics["num_steps"] = res["num_steps"]
    elif "steps" in r.progress:
        metrics["num_steps"] = r.progress["steps"]
    elif "step" in r.progress:
        metrics["num_steps"] = r.progress["step"] + 1  # a progress event carries the 0-based step
    tokens = res.get("train_tokens", r.progress.get("tokens"))
    metrics["train_tokens"] = tokens
    ts = metrics["training_seconds"]
    metrics["tokens_per_second"] = round(tokens / ts, 1) if tokens and ts else None
    metrics["peak_memory_mb"] = res.get("peak_memory_mb")
    if metrics["peak_memory_mb"] is None and r.rusage is not None:
        metrics["peak_memory_mb"] = round(r.rusage.ru_maxrss / 1024, 1)  # the worker's own, from wait4
    _mfu(metrics, res)
    metrics["deadlines"] = {
        "startup_allowance_s": preset.startup_allowance_seconds, "budget_s": preset.budget_seconds,
        "grace_s": preset.grace_seconds, "eval_timeout_s": preset.eval_timeout_seconds,
    }  # fmt: skip
    if "ready" in r.events and start is not None:
        metrics["startup_seconds"] = round(start - spawn, 3)  # what the start-up allowance bounds
    if "result" in r.events and dl.train_done is not None:
        metrics["eval_seconds"] = round(r.events["result"] - dl.train_done, 3)
    return finish(code, status=status, error=error)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _same_hash(path: Path, expected: str) -> bool:
    try:
        return file_sha256(path) == expected
    except OSError:
        return False


def _mfu(metrics: dict, res: dict) -> None:
    from harness.mfu import mfu_percent, peak_flops

    dev = metrics.get("device") or "cpu"
    name = metrics.get("gpu_name") if str(dev).startswith("cuda") else "cpu"
    peak, source = peak_flops(name)
    metrics["flops_per_token"] = res.get("flops_per_token")
    metrics["mfu_peak_flops"] = peak
    metrics["mfu_peak_source"] = source if peak else None
    mfu = mfu_percent(
        metrics["flops_per_token"], metrics.get("train_tokens"), metrics.get("training_seconds"), peak
    )
    metrics["mfu_percent"] = round(mfu, 2) if mfu is not None else None
    if mfu is None:
        metrics["mfu_note"] = source if peak is None else "no FLOP count or no training time"


def _fmt(v, spec: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


def _summary(m: dict) -> None:
    params = m.get("num_params")
    print(
        f"harness: status {m.get('status')} | val_bpb {_fmt(m.get('val_bpb'), '.4f')} | "
        f"train {_fmt(m.get('training_seconds'), '.1f')} s | total {_fmt(m.get('total_seconds'), '.1f')} s | "
        f"steps {_fmt(m.get('num_steps'))} | params {_fmt(params / 1e6 if params else None, '.2f')}M | "
        f"mfu {_fmt(m.get('mfu_percent'), '.1f')}% | peak mem {_fmt(m.get('peak_memory_mb'), '.0f')} MB",
        flush=True,
    )
    if m.get("status") != "ok" and m.get("error"):
        print(f"harness: {m['error'].splitlines()[0]}", flush=True)
