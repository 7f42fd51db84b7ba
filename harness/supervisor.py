"""The trusted process of a run: inputs, the clock, the data, the scoring and metrics.json.

    python -m harness run TRAIN_FILE --preset NAME --out metrics.json [--seed N] [--device D]

It never runs a line of train.py. In order:

1. Verify the inputs: the preset (unknown: exit 2), every data file (train.bin, val.bin,
   token_bytes.npy, tokenizer.pkl) against the manifest's sha256 (a mismatch or a missing file:
   exit 3, naming the file), the harness's own files hashed and recorded, train.py copied into a
   private run directory and hashed there (what is hashed is what runs).
2. Train (harness/worker.py) in a sandbox (harness/sandbox.py). This process keeps the clock and
   serves the batches: it packs them (harness/dataloader.py, the order fixed by the seed) and sends
   them only after the clock has started and only while the budget lasts. The clock starts at the
   worker's `clock` or first batch request, or when the start-up allowance (wall clock) runs out;
   it counts CPU seconds of the sandbox's whole tree on the cpu/tiny presets, wall seconds on gpu.
   Training past budget + grace, or past the wall deadline, is killed: `timeout`. Training that ended
   (train() returned) more than the overrun tolerance past the budget, or a hand-back (saving the
   weights) longer than its allowance, is `invalid`. Then the whole sandbox is killed, before the
   scoring starts: nothing the candidate started survives into evaluation or past the run.
3. Score (harness/scorer.py): the weights file (opened O_NOFOLLOW, a regular file under a size
   cap, a safetensors header parsed here) goes to two model sandboxes that return logits.
4. Write metrics.json atomically and print a summary line.

Exit codes: 0 a result (whatever its status), 2 usage, 3 infrastructure (metrics still written,
status "infra_error"): the runner retries 3 and never charges the candidate for it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import stat
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness.integrity import HARNESS_DIR, file_sha256, harness_sha256, static_scan
from harness.protocol import (
    EXIT_INFRA,
    EXIT_RESULT,
    EXIT_USAGE,
    METRIC_KEYS,
    training_wall_deadline_seconds,
)

POLL_S = 0.05
LOG_TAIL_LINES = 40
MAX_BATCH_TOKENS = 1 << 22  # one batch request may ask for at most this many tokens
MAX_WEIGHTS_BYTES = 8 << 30
WORKER_INSIDE_TRAIN = "/opt/autoresearch/candidate/train.py"
CANDIDATE_STATUSES = ("crash", "nan", "invalid")  # what a sandbox may report about itself


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


def tail_lines(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-n:])


def inprocess_enabled() -> bool:
    from harness.sandbox import ENV_INPROCESS_OFF

    return os.environ.get(ENV_INPROCESS_OFF) != "1"


def read_weights(path: Path) -> tuple[int, int]:
    """(size, number of parameters) of a safetensors file written by the sandbox, read defensively:
    no symlink, a regular file, under the size cap, a well-formed header. Raises ValueError."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("the weights are not a regular file")
        if st.st_size > MAX_WEIGHTS_BYTES:
            raise ValueError(f"the weights file has {st.st_size} bytes, over the cap of {MAX_WEIGHTS_BYTES}")
        head = os.pread(fd, 8, 0)
        if len(head) != 8:
            raise ValueError("the weights file is truncated")
        (n,) = struct.unpack("<Q", head)
        if n > min(st.st_size - 8, 100 << 20):
            raise ValueError("the weights file's header is malformed")
        header = json.loads(os.pread(fd, n, 8))
        params = 0
        for k, v in header.items():
            if k == "__metadata__":
                continue
            params += math.prod(int(d) for d in v["shape"])
        return st.st_size, params
    finally:
        os.close(fd)


class Clock:
    """The training clock, on the supervisor's side: started once, read on the preset's clock."""

    def __init__(self, preset, counter, spawn: float, before_start=None):
        self.preset, self.counter, self.spawn = preset, counter, spawn
        self.wall0: float | None = None
        self.cpu0: float | None = None
        self.implicit = False
        # Called once, before the clock starts and so before the first batch is served (what the
        # harness keeps of the sandbox's compile cache: harness/compile_cache.py, snapshot). Its time
        # is the harness's, not the training's: the clock starts when it returns.
        self.before_start = before_start

    def start(self, now: float, implicit: bool = False) -> None:
        if self.wall0 is None:
            if self.before_start is not None:
                hook, self.before_start = self.before_start, None
                hook()
                now = max(now, time.monotonic())
            self.wall0, self.cpu0, self.implicit = now, self.counter.read(), implicit

    def maybe_start(self, now: float) -> None:
        if self.wall0 is None and now >= self.spawn + self.preset.startup_allowance_seconds:
            self.start(now, implicit=True)

    def cpu(self) -> float:
        return 0.0 if self.cpu0 is None else max(0.0, self.counter.read() - self.cpu0)

    def wall(self, now: float) -> float:
        return 0.0 if self.wall0 is None else max(0.0, now - self.wall0)

    def used(self, now: float) -> float:
        return self.cpu() if self.preset.clock == "cpu" else self.wall(now)


class Training:
    """The training sandbox and what it did, driven by the event loop in `loop`."""

    def __init__(self, sp, chan, clock: Clock, preset, loaders, log_path: Path, echo: bool, on_clock=None):
        self.sp, self.chan, self.clock, self.preset, self.loaders = sp, chan, clock, preset, loaders
        self.on_clock = on_clock  # called once, soon after the clock starts
        self.log_path, self.echo = log_path, echo
        self.ready: dict | None = None
        self.ready_at: float | None = None
        self.returned: tuple[float, float, float] | None = None  # (used, cpu, wall) at "returned"
        self.done: tuple[float, float, float] | None = None
        self.returned_msg: dict = {}
        self.failure: tuple[str, str] | None = None
        self.infra: str | None = None
        self.timeout: str | None = None
        self.progress: dict = {}
        self.served_tokens = 0
        self.batches = 0
        self.stopped = False
        self._log_pos = 0

    def mark(self, now: float) -> tuple[float, float, float]:
        return self.clock.used(now), self.clock.cpu(), self.clock.wall(now)

    def echo_log(self) -> None:
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

    def handle(self, msg: dict, payload: bytes, now: float) -> bool:
        """One message from the worker; True when the training phase is over."""
        from harness.channel import ProtocolError

        op = msg.get("op")
        p = self.preset
        if op == "ready" and self.ready is None:
            self.ready, self.ready_at = msg, now
        elif op == "clock":
            self.clock.start(now)
            self.chan.send({"op": "clock", "used": self.clock.used(now), "started": True})
        elif op == "batch":
            b, t = msg.get("b"), msg.get("t")
            if not (
                isinstance(b, int)
                and isinstance(t, int)
                and 1 <= t <= p.seq_len
                and b >= 1
                and b * (t + 1) <= MAX_BATCH_TOKENS
            ):
                raise ProtocolError(f"a batch request of shape {b} x {t}")
            self.clock.start(now)
            used = self.clock.used(now)
            if used >= p.budget_seconds or self.returned is not None:
                self.stopped = True
                self.chan.send({"op": "stop", "used": used, "started": True})
            else:
                rows = self.loaders.rows(b, t)
                self.served_tokens += b * t
                self.batches += 1
                self.chan.send({"op": "batch", "used": used, "started": True}, rows.astype("<u2").tobytes())
        elif op == "log":
            self.progress = {k: msg.get(k) for k in ("step", "loss", "tokens")}
        elif op == "returned" and self.returned is None:
            self.returned = self.mark(now)
            self.returned_msg = msg
        elif op == "done":
            self.done = self.mark(now)
            if self.returned is None:
                self.returned = self.done
            return True
        elif op == "fail":
            status = msg.get("status") if msg.get("status") in CANDIDATE_STATUSES else "invalid"
            self.failure = (status, str(msg.get("error"))[:8000])
            return True
        elif op == "infra" and self.ready is None:
            self.infra = str(msg.get("error"))[:2000]
            return True
        else:
            raise ProtocolError(f"an unexpected message {op!r}")
        return False

    def deadline(self, now: float) -> str | None:
        p, c = self.preset, self.clock
        if c.wall0 is None:
            return None
        used = c.used(now)
        if used > p.budget_seconds + p.grace_seconds:
            what = "hand the model back" if self.returned else "end training"
            return (
                f"timeout: the training did not {what} by budget + grace: {used:.1f} of "
                f"{p.budget_seconds:g} + {p.grace_seconds:g} {p.clock}-seconds used"
            )
        wall = c.wall(now)
        limit = training_wall_deadline_seconds(p)
        if wall > limit:
            return (
                f"timeout: the training phase ran {wall:.1f} wall-clock seconds, past its hard deadline of "
                f"{limit:g} s (it stalled, slept or waited: {used:.1f} {p.clock}-seconds used)"
            )
        return None

    def loop(self) -> None:
        from harness.channel import ChannelClosed, ProtocolError

        while True:
            now = time.monotonic()
            self.clock.maybe_start(now)
            if self.on_clock is not None and self.clock.wall0 is not None:
                self.on_clock, call = None, self.on_clock
                call()
            why = self.deadline(now)
            if why:
                self.timeout = why
                return
            try:
                got = self.chan.recv(timeout=POLL_S)
            except ChannelClosed:
                return
            except ProtocolError as e:
                self.failure = ("invalid", f"invalid: the training process broke the harness's protocol: {e}")
                return
            self.echo_log()
            if got is not None:
                try:
                    if self.handle(got[0], got[1], time.monotonic()):
                        return
                except ProtocolError as e:
                    self.failure = (
                        "invalid",
                        f"invalid: the training process broke the harness's protocol: {e}",
                    )
                    return
            elif self.sp.poll() is not None:
                with contextlib.suppress(Exception):  # the last messages it wrote before exiting
                    while (got := self.chan.recv(timeout=0)) is not None:
                        if self.handle(got[0], got[1], time.monotonic()):
                            return
                return


SCORER_WARMUP_TIMEOUT_S = 120.0  # the supervisor's CUDA context on a GPU run (scorer.DeviceWarmup)
WORKER_PHASES = (("entry", "sandbox_to_python_s"), ("torch", "torch_import_s"), ("spec", "spec_wait_s"),
                 ("compiler", "compiler_import_s"), ("device", "device_init_s"))  # fmt: skip


def startup_phases(t_begin: float, spawn: float, ready: dict | None, ready_at: float | None,
                   clock_start: float | None) -> dict:  # fmt: skip
    """Where the start-up went, in seconds: the supervisor before the sandbox, then the worker's own
    marks (the `times` of its ready message, on the shared monotonic clock: informational, since the
    worker could forge them, so only marks in order between spawn and the ready message are kept),
    then train.py from ready to the clock's start (import, model build, compile warm-up)."""
    out = {"harness_s": round(spawn - t_begin, 3)}
    times = (ready or {}).get("times")
    prev = spawn
    if isinstance(times, dict) and ready_at is not None:
        for key, name in WORKER_PHASES:
            t = times.get(key)
            if not isinstance(t, int | float) or not prev <= t <= ready_at:
                break
            out[name] = round(t - prev, 3)
            prev = t
    if ready_at is not None:
        out["worker_rest_s"] = round(ready_at - prev, 3)
        if clock_start is not None and clock_start >= ready_at:
            out["train_py_s"] = round(clock_start - ready_at, 3)
    return out


class Marks:
    """Seconds from each mark to the next, into a dict (informational): mark("x_s") records the time
    since the previous mark (or `start`) as x_s."""

    def __init__(self, into: dict, start: float, clock=time.monotonic):
        self.into, self.last, self.clock = into, start, clock

    def __call__(self, phase: str) -> None:
        now = self.clock()
        self.into[phase] = round(now - self.last, 3)
        self.last = now


def compile_stats(msg: dict, key: str, kind: type) -> dict:
    """The worker's torch.compile counters or timers (informational): at most 16 entries of short
    names and small non-negative numbers of `kind`; anything else is dropped."""
    c = msg.get(key)
    if not isinstance(c, dict):
        return {}
    return {str(k)[:60]: v for k, v in list(c.items())[:16] if type(v) is kind and 0 <= v < 10**6}


class Loaders:
    """The training batches: one packed stream per (batch, seq_len) shape, fixed by the seed."""

    def __init__(self, data, seed: int):
        from harness.dataloader import piece_starts

        self.tokens = data.train_tokens()
        self.bos = data.bos_id
        self.seed = seed
        self.starts = piece_starts(self.tokens, self.bos)
        self.by_shape: dict = {}

    def rows(self, b: int, t: int):
        from harness.dataloader import PackedLoader

        key = (b, t)
        if key not in self.by_shape:
            self.by_shape[key] = PackedLoader(self.tokens, self.bos, b, t, seed=self.seed, starts=self.starts)
        return self.by_shape[key].next_rows()


def protected_paths(data, preset) -> list[str]:
    """What the in-process layer forbids opening (only reachable at all without the sandbox)."""
    paths = {str(p) for p in data.protected_paths()}
    paths.add(str(data.val_path))
    return sorted(paths)


def own_log(path: Path) -> Path:
    """The run's log file, never the one this process's stdout or stderr already writes to: with
    `--out m.json > m.log` the echo would read back its own lines from m.log and write them again,
    without end. That case logs to m.run.log instead."""
    try:
        st = path.stat()
    except OSError:
        return path
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(fd), st):
                return path.with_suffix(".run.log")
    return path


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
    out = Path(out).resolve()
    log_path = own_log(Path(log_path).resolve() if log_path else out.with_suffix(".log"))
    from harness import compile_cache
    from harness.data import CacheError, load_prepared, prepare_command
    from harness.presets import UnknownPresetError, get_preset, handback_allowance, overrun_tolerance
    from harness.sandbox import (
        INSIDE_ROOT,
        INSTALL_HINT,
        NOBODY,
        Sandbox,
        cpu_counter,
        kill_descendants,
        set_subreaper,
    )

    metrics = blank_metrics(preset_name, seed)
    run_dir: Path | None = None
    models: list = []  # the scoring's model processes, started with the training (scorer.py)
    model_device = "cpu"
    background: list[threading.Thread] = []  # bookkeeping beside the scoring, joined before the result

    def finish(code: int, **fields) -> int:
        for job in background:
            job.join()
        if models:
            from harness.scorer import stop_models

            stop_models(models, model_device)
            models.clear()
        metrics.update(fields)
        if metrics.get("status") != "ok":
            metrics["val_bpb"] = None
        metrics["total_seconds"] = round(time.monotonic() - t_begin, 3)
        write_metrics(out, metrics)
        _summary(metrics)
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        return code

    # -- 1. the inputs -----------------------------------------------------------------------------
    try:
        preset = get_preset(preset_name)
    except UnknownPresetError as e:
        print(f"harness: {e}", file=sys.stderr)
        return finish(EXIT_USAGE, status="infra_error", error=f"usage: {e}")
    src = Path(train_file)
    if not src.is_file():
        print(f"harness: no such train file: {train_file}", file=sys.stderr)
        return finish(EXIT_USAGE, status="infra_error", error=f"usage: no such train file: {train_file}")
    dev = preset.run_device(device)
    metrics.update(device=dev, clock=preset.clock, pycache_prefix=sys.pycache_prefix)
    metrics["harness_sha256"] = h_before = harness_sha256()
    try:
        data = load_prepared(preset)
        t0 = time.monotonic()
        data.verify("all")
        metrics["verify_seconds"] = round(time.monotonic() - t0, 3)
    except CacheError as e:
        print(f"harness: {e}", file=sys.stderr)
        return finish(EXIT_INFRA, status="infra_error", error=f"infra: {e}")
    except Exception as e:  # a cache we cannot even read: the same remedy
        msg = f"cannot open the prepared data ({type(e).__name__}: {e}): run `{prepare_command(preset)}`"
        print(f"harness: {msg}", file=sys.stderr)
        return finish(EXIT_INFRA, status="infra_error", error=f"infra: {msg}")
    metrics["data_fingerprint"] = data.fingerprint
    metrics["data_source"] = data.source

    run_dir = Path(tempfile.mkdtemp(prefix="autoresearch-run-"))
    os.chmod(run_dir, 0o711)  # the sandboxed uid may reach what it is given here, list nothing
    cand_dir = run_dir / "candidate"
    cand_dir.mkdir(mode=0o755)
    train_path = cand_dir / "train.py"
    shutil.copyfile(src, train_path)
    os.chmod(train_path, 0o444)
    metrics["train_sha256"] = file_sha256(train_path)
    set_subreaper()
    sandbox = Sandbox(HARNESS_DIR, run_dir, hide=[p for p in data.protected_paths() if Path(p).is_dir()])
    metrics["isolation"] = sandbox.isolation
    metrics["isolation_version"] = sandbox.version
    if sandbox.isolation == "none":
        print(
            f"harness: isolation none: candidate code runs as plain processes with in-process checks only "
            f"({sandbox.detail}); to sandbox it, {INSTALL_HINT}",
            file=sys.stderr,
            flush=True,
        )
    inproc = inprocess_enabled()
    metrics["inprocess_checks"] = inproc
    if inproc:
        from harness.integrity import CONTRACT

        problems = static_scan(train_path.read_text(encoding="utf-8", errors="replace"), str(src))
        if problems:
            more = "".join(f"\n  {p}" for p in problems[1:8])
            return finish(
                EXIT_RESULT,
                status="invalid",
                error=f"invalid: {problems[0]}{more}\nThe contract: {CONTRACT}.",
            )

    from harness.protocol import state_root

    # The harness, the data cache, and the harness's state (its bytecode and compile cache: what later
    # runs read, so what a candidate must never write; harness/protocol.py: state_root).
    locked = [str(HARNESS_DIR), str(data.dir.parent.parent), state_root(), INSIDE_ROOT]
    inproc_spec = {
        "inprocess": inproc,
        "protected": protected_paths(data, preset) if inproc else [],
        "locked": locked if inproc else [],
    }

    # -- 2. training ---------------------------------------------------------------------------------
    from harness.bytecode import ensure_warm
    from harness.channel import Channel
    from harness.sandbox import trusted_pycache

    warmed = ensure_warm(trusted_pycache(), dev, log=lambda s: print(s, flush=True) if echo else None)
    if warmed is not None:
        metrics["bytecode_warm_seconds"] = round(warmed, 3)

    counter = cpu_counter()
    metrics["cpu_counter"] = counter.kind
    chan, child = Channel.pair(max_payload=1 << 12)
    scratch = sandbox.private_dir("train")
    owner = (NOBODY, NOBODY) if sandbox.root_drop else None
    log_path.parent.mkdir(parents=True, exist_ok=True)
    bw = sandbox.isolation == "bwrap"
    t_popen = time.monotonic()
    try:
        with open(log_path, "wb") as logf:
            sp = sandbox.popen(
                "harness.worker",
                scratch=scratch,
                ro_files={WORKER_INSIDE_TRAIN: train_path},
                threads=preset.threads,
                cuda=dev.startswith("cuda"),
                pass_fds=(child.fileno(),),
                log=logf,
                cgroup=counter if counter.kind.startswith("cgroup") else None,
                extra_env={"AUTORESEARCH_FD": str(child.fileno())},
            )
    except OSError as e:
        counter.close()
        return finish(
            EXIT_INFRA, status="infra_error", error=f"infra: could not start the training sandbox: {e}"
        )
    spawn = time.monotonic()
    child.close()

    # The compile cache is seeded while the worker imports torch (it reads the spec only after): on
    # a warm start that copy (tens of MB in thousands of files) was most of the harness's own set-up.
    # Before the scorer's CUDA warm-up below: that thread imports torch, and the copy, Python too,
    # took 2 s instead of 0.4 beside it (measured on an H200 host, benchmarks/README.md).
    t_seed = time.monotonic()
    metrics["compile_cache_seeded_bytes"] = compile_cache.seed(scratch, metrics["train_sha256"], owner)
    metrics["compile_cache_seed_seconds"] = round(time.monotonic() - t_seed, 3)
    from harness.scorer import DeviceWarmup

    scorer_warmup = DeviceWarmup(dev) if dev.startswith("cuda") else None  # beside the worker's start-up
    chan.send(
        {
            "op": "spec",
            "preset": preset.name,
            "seed": int(seed),
            "device": dev,
            "bos_id": data.bos_id,
            "threads": preset.threads,
            "train_file": WORKER_INSIDE_TRAIN if bw else str(train_path),
            **inproc_spec,
        }
    )
    # The scoring's two model processes start when the training's clock does (their start-up, a torch
    # import and build_model, then runs beside the training and adds nothing to a run), or when
    # training ends without it; a candidate that fails before its clock starts costs none of it.
    from harness.scorer import start_models

    model_device = dev
    start_failure: list[str] = []

    def start_scoring() -> None:
        if models or start_failure:
            return
        try:
            models.extend(
                start_models(
                    sandbox=sandbox,
                    preset=preset,
                    device=dev,
                    seed=int(seed),
                    bos_id=data.bos_id,
                    train_file=train_path,
                    run_dir=run_dir,
                    inprocess=inproc_spec,
                    compile_seed=metrics["train_sha256"],
                )
            )
        except OSError as e:
            start_failure.append(f"infra: could not start the scoring's sandboxes: {e}")
            return
        if hasattr(counter, "exclude"):  # the /proc counter: the model processes are not the training
            counter.exclude.update(mp.sp.proc.pid for mp in models)

    loaders = Loaders(data, int(seed))  # packed here, while the worker imports torch
    at_clock: list = []  # the compile cache as it was when the clock started, once it has

    def snapshot_cache() -> None:
        t = time.monotonic()
        at_clock.append(compile_cache.snapshot(scratch))
        metrics["compile_cache_snapshot_seconds"] = round(time.monotonic() - t, 3)

    clock = Clock(preset, counter, spawn, before_start=snapshot_cache)
    tr = Training(sp, chan, clock, preset, loaders, log_path, echo, on_clock=start_scoring)
    try:
        tr.loop()
        end = time.monotonic()
        final_used, final_cpu, final_wall = tr.mark(end)
    finally:
        sp.kill()
        with contextlib.suppress(Exception):
            sp.proc.wait(timeout=10)
        if hasattr(counter, "kill_all"):
            counter.kill_all()
        left = kill_descendants(exclude={mp.sp.proc.pid for mp in models})
        chan.close()
    mark = Marks(metrics.setdefault("finish_phases", {}), end)  # where the time after training goes
    mark("reap_s")  # the kill and reap of the training sandbox
    tr.echo_log()
    metrics["leftover_processes_killed"] = left
    if hasattr(counter, "close"):
        counter.close()
    import resource

    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    tail = tail_lines(log_path)
    metrics["log_path"] = str(log_path)
    metrics["log_tail"] = tail
    if tr.ready:
        v = tr.ready.get("versions") or {}
        metrics.update(
            torch_version=v.get("torch"),
            numpy_version=v.get("numpy"),
            cuda_version=v.get("cuda"),
            gpu_name=tr.ready.get("gpu_name"),
            threads=tr.ready.get("threads"),
        )
        metrics["device_name"] = tr.ready.get("gpu_name") if dev.startswith("cuda") else _cpu_name()
    if clock.wall0 is not None:
        metrics["startup_seconds"] = round(clock.wall0 - spawn, 3)
        metrics["clock_start"] = "allowance ran out" if clock.implicit else "train.py"
    metrics["startup_phases"] = startup_phases(t_begin, t_popen, tr.ready, tr.ready_at, clock.wall0)
    ret = tr.returned or (final_used, final_cpu, final_wall)
    metrics["training_seconds"] = round(ret[0], 3)
    metrics["training_cpu_seconds"] = round(ret[1], 3)
    metrics["training_wall_seconds"] = round(ret[2], 3)
    if tr.done:
        metrics["handback_seconds"] = round(tr.done[0] - tr.returned[0], 3)
    rm = tr.returned_msg
    metrics["num_steps"] = (
        rm.get("steps")
        if isinstance(rm.get("steps"), int)
        else ((tr.progress.get("step") + 1) if isinstance(tr.progress.get("step"), int) else None)
    )
    metrics["train_tokens"] = tr.served_tokens  # what the harness served, not what train.py claims
    metrics["train_batches"] = tr.batches
    metrics["last_train_loss"] = rm.get("last_loss", tr.progress.get("loss"))
    ts = metrics["training_seconds"]
    metrics["tokens_per_second"] = round(tr.served_tokens / ts, 1) if tr.served_tokens and ts else None
    metrics["compile_counters"] = compile_stats(rm, "compile_counters", int)
    metrics["compile_seconds"] = compile_stats(rm, "compile_seconds", float)
    peak = rm.get("peak_memory_mb")
    metrics["peak_memory_mb"] = round(peak, 1) if isinstance(peak, int | float) else round(maxrss, 1)
    metrics["deadlines"] = {
        "clock": preset.clock,
        "startup_allowance_s": preset.startup_allowance_seconds,
        "budget_s": preset.budget_seconds,
        "overrun_tolerance_s": overrun_tolerance(preset),
        "grace_s": preset.grace_seconds,
        "training_wall_deadline_s": training_wall_deadline_seconds(preset),
        "eval_timeout_s": preset.eval_timeout_seconds,
    }

    if tr.infra is not None or (tr.ready is None and tr.timeout is None and tr.failure is None):
        why = (
            tr.infra
            or f"the training sandbox exited before the harness was set up (exit {sp.poll()})\n{tail}"
        )
        return finish(EXIT_INFRA, status="infra_error", error=f"infra: {why}")
    if tr.timeout is not None:
        return finish(EXIT_RESULT, status="timeout", error=f"{tr.timeout}; the sandbox was killed\n{tail}")
    if tr.failure is not None:
        return finish(EXIT_RESULT, status=tr.failure[0], error=tr.failure[1])
    if tr.done is None:
        rc = sp.poll()
        how = f"was killed by signal {-rc}" if rc is not None and rc < 0 else f"exited with code {rc}"
        return finish(
            EXIT_RESULT,
            status="crash",
            error=f"crash: the training process {how} without handing a model back\n{tail}",
        )
    tol = overrun_tolerance(preset)
    if tr.returned[0] > preset.budget_seconds + tol:
        return finish(
            EXIT_RESULT,
            status="invalid",
            error=(
                f"invalid: training went on past the budget: train() returned after {tr.returned[0]:.2f} "
                f"{preset.clock}-seconds, budget {preset.budget_seconds:g} + tolerance {tol:g}"
            ),
        )
    weights = scratch / "weights.safetensors"
    try:
        size, params = read_weights(weights)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return finish(EXIT_RESULT, status="invalid", error=f"invalid: the trained weights are unusable: {e}")
    metrics["num_params"] = params
    metrics["weights_bytes"] = size
    allowance = handback_allowance(size)
    if tr.done[0] - tr.returned[0] > allowance:
        return finish(
            EXIT_RESULT,
            status="invalid",
            error=(
                f"invalid: handing the model back took {tr.done[0] - tr.returned[0]:.2f} "
                f"{preset.clock}-seconds, over the allowance of {allowance:.2f} for {size} bytes of "
                "weights (training may not go on after train() returns)"
            ),
        )
    model_path = run_dir / "weights.safetensors"
    shutil.copyfile(weights, model_path)  # our copy: nothing of the sandbox is alive to change it now
    mark("weights_s")
    # Kept while the scoring runs (nothing of the training sandbox is alive to change it now).
    keeping = threading.Thread(
        target=keep_compile_cache, args=(scratch, metrics, at_clock[0] if at_clock else None), daemon=True
    )
    keeping.start()
    background.append(keeping)

    # -- 3. scoring ----------------------------------------------------------------------------------
    from harness.scorer import ScoreFailure, score

    start_scoring()  # already running unless the clock never started
    if scorer_warmup is not None:
        # Bounded: the scoring's own set-up then meets the same CUDA failure and reports it (a driver
        # that hangs there too is ended by the runner's hard timeout).
        scorer_warmup.join(timeout=SCORER_WARMUP_TIMEOUT_S)
        metrics["scorer_warmup_seconds"] = scorer_warmup.seconds
    if start_failure:
        return finish(EXIT_INFRA, status="infra_error", error=start_failure[0])
    mark("scorer_wait_s")
    try:
        res = score(models, data=data, preset=preset, device=dev, weights=model_path)
    except ScoreFailure as e:
        kill_descendants()
        return finish(EXIT_RESULT, status=e.status, error=e.error)
    except Exception as e:  # the scorer's own failure: never the candidate's
        kill_descendants()
        import traceback

        return finish(
            EXIT_INFRA,
            status="infra_error",
            error=f"infra: the scorer failed: {type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}",
        )
    metrics["leftover_processes_killed"] += kill_descendants()
    mark("score_s")
    # What the model processes compiled is never kept: they saw the validation rows and ran the
    # candidate's code, and the next run of this train.py (a replication) starts from this partition,
    # so a kept file would carry those rows into its training (tests/redteam/leak_val_cache.py).
    for k in (
        "val_bpb",
        "val_loss",
        "eval_tokens",
        "eval_bytes",
        "eval_rows",
        "eval_seconds",
        "eval_startup_seconds",
        "eval_build_wait_seconds",
        "eval_transport",
        "eval_compiled",
        "eval_compile_seconds",
        "eval_phases",
        "flops_per_token",
        "probe",
    ):
        metrics[k] = res.get(k)
    _mfu(metrics)

    # -- checks that need no trust in anything the candidate touched ----------------------------------
    if harness_sha256() != h_before:
        return finish(
            EXIT_RESULT, status="invalid", error="invalid: the harness files changed during the run"
        )
    try:
        data.verify(["val.bin", "token_bytes.npy", "train.bin", "tokenizer.pkl"], fresh=True)
    except CacheError as e:
        return finish(EXIT_RESULT, status="invalid", error=f"invalid: the data changed during the run: {e}")
    mark("checks_s")
    return finish(EXIT_RESULT, status="ok", error=None)


def keep_compile_cache(scratch: Path, metrics: dict, at_clock=None) -> None:
    """The training sandbox's compile cache, as it was when the clock started (`at_clock`, a
    compile_cache.Snapshot; None: the clock never started), into this train.py's partition, then its
    scratch away."""
    from harness import compile_cache

    metrics["compile_cache_kept_bytes"] = compile_cache.keep(scratch, metrics["train_sha256"], at_clock)
    shutil.rmtree(scratch, ignore_errors=True)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _mfu(metrics: dict) -> None:
    from harness.mfu import mfu_percent, peak_flops

    dev = metrics.get("device") or "cpu"
    name = metrics.get("gpu_name") if str(dev).startswith("cuda") else "cpu"
    peak, source = peak_flops(name)
    metrics["mfu_peak_flops"] = peak
    metrics["mfu_peak_source"] = source if peak else None
    mfu = mfu_percent(
        metrics.get("flops_per_token"),
        metrics.get("train_tokens"),
        metrics.get("training_wall_seconds"),
        peak,
    )
    metrics["mfu_percent"] = round(mfu, 2) if mfu is not None else None
    if mfu is None:
        metrics["mfu_note"] = source if peak is None else "no FLOP count or no training time"
    else:
        metrics["mfu_note"] = "FLOPs per token counted in a model process (the candidate's): informational"


def _fmt(v, spec: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return format(v, spec)


def _summary(m: dict) -> None:
    params = m.get("num_params")
    print(
        f"harness: status {m.get('status')} | val_bpb {_fmt(m.get('val_bpb'), '.4f')} | "
        f"train {_fmt(m.get('training_seconds'), '.1f')} {m.get('clock') or ''}-s | "
        f"total {_fmt(m.get('total_seconds'), '.1f')} s | steps {_fmt(m.get('num_steps'))} | "
        f"params {_fmt(params / 1e6 if params else None, '.2f')}M | isolation {m.get('isolation')} | "
        f"peak mem {_fmt(m.get('peak_memory_mb'), '.0f')} MB",
        flush=True,
    )
    if m.get("status") != "ok" and m.get("error"):
        print(f"harness: {m['error'].splitlines()[0]}", flush=True)
