"""The scoring: val_bpb from logits, computed where no candidate code runs, with every row its own probe.

This module runs in the supervisor, which holds the validation tokens and the byte length of every
token id; the candidate's network runs in two model processes (harness/modelproc.py), each in its
own sandbox, that receive token rows and write back logits. Nothing they do can reach the numbers
summed here.

    val_bpb = sum over scored targets of -ln p(target) / (ln 2 * sum of their UTF-8 bytes)

as in karpathy's `evaluate_bpb` (targets whose token has 0 bytes, BOS, are left out of both sums).
The rows are the same BOS-aligned packed rows as always (harness/dataloader.py, EVAL_SEED, the
preset's eval_tokens), so val_bpb means what it meant. The log-softmax runs in numpy on the CPU (the
supervisor of a CPU run never imports torch) and in torch on the device on CUDA; a test holds the two
to the same sums (tests/test_harness_unit.py).

Every row r is also a causality probe. With a secret random draw (os.urandom) the scorer picks a
cut p_r uniform in [1, T-1] and builds a twin: the row's first p_r tokens followed by real
validation text from a random other offset, so a twin looks like any row. The rows are split at
random into two halves; process A scores the originals of one half and the twins of the other,
process B the reverse, each in a shuffled order. For t < p_r the logits of a causal model depend
only on tokens both copies share, so the log-probabilities the scorer reads there (the one of the
original's target token, which is exactly what bpb sums, and of TWIN_COLUMNS secretly chosen token
ids) must agree within TOLERANCE. A model that looks ahead, counts calls, remembers earlier rows or
carries state from one batch to the next gives the two copies, computed in two processes that share
nothing and see different row mixes, different numbers there: `invalid`.

What the tolerance can hide: a model may move ln p(target) by at most TOLERANCE nats at a compared
position without being caught, so at most TOLERANCE / (ln 2 * bytes per token) bits per byte over the
whole score. What the cut can miss: look-ahead at position t shows only in rows whose cut falls
after t and within the look-ahead window, so a model that peeks one token ahead at a single position
per row escapes a row with probability 1 - 1/(T-1); over N rows, (1 - 1/(T-1))^N. The README works
out what that bounds per preset.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import select
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness import compile_cache
from harness.channel import Channel, ChannelClosed, LogitsBuffer, ProtocolError
from harness.dataloader import EVAL_SEED, PackedLoader
from harness.sandbox import NOBODY
from harness.worker import cut_lines

TWIN_COLUMNS = 3  # secretly chosen token ids compared at every shared position, besides the target
# nats of log-probability by which a row and its twin may differ at a shared position. Measured on
# every run so far: 0.0 on CPU (float32) and 0.0 on an H200 (bf16 autocast, train.py on the gpu preset
# and honest.py on tiny; benchmarks/README.md): a row's logits do not depend on the other rows of its
# batch. CUDA keeps a margin for other GPUs' kernels; 2e-3 nats hides at most 2e-3 / (ln 2 x 3.65
# bytes/token) = 8e-4 bpb of look-ahead (README: the locked harness).
TOLERANCE = {"cpu": 1e-4, "cuda": 2e-3}
LN2 = math.log(2)
POLL_S = 0.2
WEIGHTS_INSIDE = "/opt/autoresearch/model/weights.safetensors"
TRAIN_INSIDE = "/opt/autoresearch/candidate/train.py"


# What a model process says about its own failure reaches metrics.json, the ledger, a PR comment and the
# dashboard. It has seen validation rows, so that text is capped harder than a training's (8,000
# characters): every line cut to MODEL_LINE_CHARS (a traceback's frames are short; an exception's
# message keeps its start), then the first line (what failed) and the end (the traceback's last frames
# and the exception), MODEL_ERROR_CHARS in all: enough to debug, too little to carry the rows out.
MODEL_ERROR_CHARS = 2000
MODEL_LINE_CHARS = 300
MODEL_LOG_LINES = 12


def bounded(text: str, limit: int = MODEL_ERROR_CHARS) -> str:
    """`text` with every line cut to MODEL_LINE_CHARS, then to at most `limit` characters: its first
    line and its end."""
    text = cut_lines(text, MODEL_LINE_CHARS)
    if len(text) <= limit:
        return text
    head, _, rest = text.partition("\n")
    keep = limit - len(head) - len("\n...\n")
    return f"{head}\n...\n{rest[-keep:]}" if keep > 0 else head[:limit]


class ScoreFailure(Exception):
    """The candidate's model failed the scoring: status is crash / invalid / timeout / nan."""

    def __init__(self, status: str, error: str):
        super().__init__(error)
        self.status = status
        self.error = error


def bpb(nats: float, nbytes: float) -> float:
    """Bits per byte from summed nats and summed bytes."""
    if nbytes <= 0:
        raise ValueError("no bytes were scored")
    return nats / (LN2 * nbytes)


def eval_rows(val: np.ndarray, bos_id: int, batch_size: int, seq_len: int, max_tokens: int) -> np.ndarray:
    """The (N, T+1) validation rows, exactly those harness/dataloader.eval_batches would give."""
    loader = PackedLoader(val, bos_id, batch_size, seq_len, seed=EVAL_SEED, epochs=1)
    out = []
    for _ in range(max(1, int(max_tokens) // (batch_size * seq_len))):
        rows = loader.next_rows()
        if rows is None:
            break
        out.append(rows)
    if not out:
        raise RuntimeError("the validation split gave no evaluation row")
    return np.concatenate(out)


@dataclass
class Plan:
    """Which process scores which copy of which row, and the secret draws behind it."""

    rows: np.ndarray  # (N, T+1) originals
    twins: np.ndarray  # (N, T+1)
    cuts: np.ndarray  # (N,) p_r
    columns: np.ndarray  # (TWIN_COLUMNS,) token ids compared besides the target
    work: list[list[tuple[int, bool]]] = field(default_factory=list)  # per process: (row, is_twin)


def make_plan(rows: np.ndarray, val: np.ndarray, vocab: int, rng: random.Random) -> Plan:
    n, width = rows.shape
    T = width - 1
    cuts = np.array([rng.randint(1, T - 1) for _ in range(n)], dtype=np.int64)
    twins = rows.copy()
    for r in range(n):
        p = int(cuts[r])
        need = width - p
        o = rng.randrange(0, max(1, len(val) - need))
        twins[r, p:] = np.asarray(val[o : o + need], dtype=rows.dtype)
    columns = np.array(rng.sample(range(vocab), TWIN_COLUMNS), dtype=np.int64)
    order = list(range(n))
    rng.shuffle(order)
    half = set(order[: (n + 1) // 2])
    a = [(r, r not in half) for r in range(n)]  # originals of the first half, twins of the second
    b = [(r, r in half) for r in range(n)]
    rng.shuffle(a)
    rng.shuffle(b)
    return Plan(rows, twins, cuts, columns, [a, b])


class Tally:
    """The sums, and the compared values of whichever copy of a row arrived first."""

    def __init__(self, plan: Plan, token_bytes: np.ndarray, device_type: str):
        self.plan = plan
        self.token_bytes = token_bytes.astype(np.int64)
        self.tol = TOLERANCE.get(device_type, TOLERANCE["cuda"])
        self.nats = 0.0
        self.bytes = 0
        self.scored = 0
        self.pending: dict[int, np.ndarray] = {}
        self.max_diff = 0.0
        self.compared = 0
        self.nonfinite = False

    def add(self, lp, items: list[tuple[int, bool]]) -> None:
        """lp: float32 [b, T, V] log-probabilities for the copies `items`, in order: numpy on the CPU
        (log_softmax_np), a torch tensor on the device on CUDA (read back only at the picked ids, the
        whole batch at once: one wait for a GPU that the model processes share, not two per row)."""
        plan = self.plan
        rows = plan.rows[[r for r, _ in items]]
        at_all, compared = _picks(lp, rows[:, 1:].astype(np.int64), plan.columns)
        for i, (r, twin) in enumerate(items):
            row = rows[i]
            p = int(plan.cuts[r])
            at_t, vals = at_all[i], compared[i, :p]
            if not twin:
                nb = self.token_bytes[row[1:]]
                nats = -float(np.where(nb > 0, at_t.astype(np.float64), 0.0).sum())
                if not math.isfinite(nats):
                    self.nonfinite = True
                self.nats += nats
                self.bytes += int(nb.sum())
                self.scored += int((nb > 0).sum())
            if not np.isfinite(vals).all():
                self.nonfinite = True
                continue
            other = self.pending.pop(r, None)
            if other is None:
                self.pending[r] = vals
                continue
            d = float(np.abs(vals - other).max())
            self.compared += 1
            self.max_diff = max(self.max_diff, d)
            if d > self.tol:
                t = int(np.abs(vals - other).max(axis=1).argmax())
                raise ScoreFailure(
                    "invalid",
                    f"invalid: the model is not causal (or not deterministic): row {r}'s "
                    f"log-probabilities at position {t} changed by {d:.3g} nats (tolerance {self.tol:g}) "
                    f"between two model processes that gave it the same first {p} tokens and different "
                    "tokens after them",
                )


def log_softmax_np(logits: np.ndarray, scratch: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """float32 log-softmax over the last axis, in numpy: the CPU scoring needs no torch, so the
    supervisor of a CPU run never imports it (about two CPU-seconds a run).

    scratch: two float32 arrays at least as large as `logits` (first axis), reused for every batch
    of a scoring (None: two fresh ones); the result is a view into the first, valid until the next
    call with them. Fresh arrays per batch cost more in page faults than the arithmetic: the tiny
    preset's eight batches took 0.38-0.43 CPU-seconds that way, 0.11 with scratch (same values)."""
    x = np.asarray(logits, dtype=np.float32)
    m = x.max(axis=-1, keepdims=True)
    scratch = scratch or (np.empty_like(x), np.empty_like(x))
    n = len(x)
    y = np.subtract(x, m, out=scratch[0][:n])
    e = np.exp(y, out=scratch[1][:n])
    return np.subtract(y, np.log(e.sum(axis=-1, keepdims=True, dtype=np.float32)), out=y)


def _picks(lp, tgt: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From a batch's [b, T, V] log-probabilities and its targets [b, T]: ln p(target) at every
    position ([b, T]) and the compared values, target then `columns` ([b, T, 1 + len(columns)]), as
    float32 numpy (a torch tensor is read back in one transfer)."""
    b = len(tgt)
    if isinstance(lp, np.ndarray):
        at_t = np.take_along_axis(lp[:b], tgt[:, :, None], 2)
        return at_t[:, :, 0], np.concatenate([at_t, lp[:b][:, :, columns]], 2)
    import torch

    t = torch.as_tensor(tgt, device=lp.device)
    at_t = lp[:b].gather(2, t[:, :, None])
    vals = torch.cat([at_t, lp[:b].index_select(2, torch.as_tensor(columns, device=lp.device))], 2)
    vals = vals.to("cpu", torch.float32).numpy()
    return vals[:, :, 0], vals


def make_buffer(B: int, T: int, V: int, device: str, transport: str | None = None):
    """(kind, buffer with .fd and .close(), float32 [B, T, V] view) for one model process's logits:
    a CUDA VMM allocation exported as a fd on CUDA (zero copy; AUTORESEARCH_CUDA_TRANSPORT=host
    forces the host path), else a sealed memfd in host memory."""
    transport = transport or os.environ.get("AUTORESEARCH_CUDA_TRANSPORT", "vmm")
    if not device.startswith("cuda"):
        buf = LogitsBuffer(B * T * V * 4)
        return "host", buf, np.frombuffer(buf.map, dtype=np.float32).reshape(B, T, V)
    import torch

    if transport == "vmm":
        from harness.cuda_ipc import VmmBuffer

        idx = torch.device(device).index or 0
        try:
            buf = VmmBuffer(B * T * V * 4, idx)
            return "vmm", buf, buf.tensor((B, T, V))
        except (OSError, RuntimeError, AttributeError) as e:
            print(
                f"harness: CUDA VMM transport unavailable ({e}); copying logits through host memory",
                flush=True,
            )
    buf = LogitsBuffer(B * T * V * 4)
    view = torch.from_numpy(np.frombuffer(buf.map, dtype=np.float32).reshape(B, T, V))
    torch.cuda.cudart().cudaHostRegister(view.data_ptr(), view.numel() * 4, 0)
    return "host", buf, view


class DeviceWarmup(threading.Thread):
    """On CUDA, `import torch` and this process's CUDA context, which the scoring needs (its logits
    buffers, its log-softmax), made in a thread that the supervisor starts with the training sandbox:
    they are ready long before the training ends. Otherwise the first scoring paid for them, about
    1.6 s of every evaluation on an H200 (the supervisor imports torch for nothing else: a CPU run
    scores in numpy and never does). Only the harness's own code runs here, and the supervisor joins
    it before scoring. The context holds some GPU memory beside the candidate's, the same for every
    candidate."""

    def __init__(self, device: str):
        super().__init__(name="scorer-device-warmup", daemon=True)
        self.device = device
        self.seconds: float | None = None
        self.start()

    def run(self) -> None:
        t0 = time.monotonic()
        with contextlib.suppress(Exception):  # the scoring's own set-up reports a real failure
            import torch

            torch.cuda.init()
            torch.zeros(1, device=self.device)
            torch.cuda.synchronize()
            self.seconds = round(time.monotonic() - t0, 3)


class ModelProc:
    """One sandboxed model process and its side of the protocol."""

    def __init__(self, name: str, sp, chan: Channel, log_path: Path):
        self.name, self.sp, self.chan, self.log_path = name, sp, chan, log_path
        self.buffer: LogitsBuffer | None = None
        self.view = None
        self.items: list[tuple[int, bool]] = []
        self.inflight: list[tuple[int, bool]] | None = None
        self.kind = "host"
        self.built: dict | None = None
        self.weights: Path | None = None  # where the process reads the weights (its own view)
        self.wdir: Path | None = None  # where we put them

    def failure(self, msg: dict | None) -> ScoreFailure:
        if msg is not None and msg.get("op") == "fail":
            status = msg.get("status") if msg.get("status") in ("crash", "invalid", "nan") else "invalid"
            return ScoreFailure(status, bounded(str(msg.get("error"))))
        if msg is not None:
            op = bounded(str(msg.get("op")), 80)
            return ScoreFailure("crash", f"crash: a model process of the scoring sent {op!r} out of turn")
        rc = self.sp.poll()
        if rc is None:  # its socket closed a moment before it could be reaped
            with contextlib.suppress(subprocess.TimeoutExpired):
                rc = self.sp.proc.wait(timeout=2)
        if rc is None:
            how = "stopped answering"
        elif rc < 0:
            how = f"was killed by signal {-rc}"
        elif rc > 128:  # bubblewrap passes a signalled child on as 128 + the signal
            how = f"exited with code {rc} (signal {rc - 128})"
        else:
            how = f"exited with code {rc}"
        from harness.supervisor import tail_lines

        return ScoreFailure(
            "crash",
            bounded(
                f"crash: a model process of the scoring {how} during evaluation (SIGKILL: possibly out of "
                f"memory)\n{tail_lines(self.log_path, MODEL_LOG_LINES)}"
            ),
        )


# Tests only, read here (the supervisor), never passed into a sandbox: compile the scoring forward on
# any device with this torch.compile backend ("eager": dynamo without inductor), so that a CPU test
# runs the compiled scoring's protocol end to end.
ENV_TEST_SCORING_BACKEND = "AUTORESEARCH_TEST_SCORING_BACKEND"
# Each model process gets a quarter of the compile workers a training sandbox gets: their compile
# (preset.compile_scoring) runs beside the candidate's training, which keeps most of the cores.
MODEL_COMPILE_SHARE = 4
MODEL_DIR_INSIDE = "/opt/autoresearch/model"  # read-only; the weights appear in it after training
WEIGHTS_NAME = "weights.safetensors"


def start_models(
    *,
    sandbox,
    preset,
    device: str,
    seed: int,
    bos_id: int,
    train_file: Path,
    run_dir: Path,
    inprocess: dict | None,
    count_flops: bool = True,
    compile_seed: str | None = None,
) -> list[ModelProc]:
    """Start the two model processes, each in its own sandbox, while the candidate still trains: they
    import torch and train.py and build the network, then wait for `score` to hand them the weights.
    Their CPU time is not the training's (they are outside its cgroup and process tree). Raises
    OSError when a sandbox cannot be started (the harness's failure). `stop_models` ends them."""
    bw = sandbox.isolation == "bwrap"
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    test_backend = os.environ.get(ENV_TEST_SCORING_BACKEND)
    procs: list[ModelProc] = []
    try:
        for i, name in enumerate(("a", "b")):
            scratch = sandbox.private_dir(f"model-{name}")
            if compile_seed is not None:  # the partition of this train.py, a private copy each
                compile_cache.seed(scratch, compile_seed, (NOBODY, NOBODY) if sandbox.root_drop else None)
            wdir = run_dir / f"weights-{name}"
            wdir.mkdir(mode=0o755)
            chan, child = Channel.pair(max_payload=1 << 12)
            log_path = run_dir / f"model-{name}.log"
            with open(log_path, "wb") as logf:
                sp = sandbox.popen(
                    "harness.modelproc",
                    scratch=scratch,
                    threads=preset.threads,
                    cuda=device_type == "cuda",
                    compile_share=MODEL_COMPILE_SHARE,
                    ro_files={TRAIN_INSIDE: train_file, MODEL_DIR_INSIDE: wdir},
                    pass_fds=(child.fileno(),),
                    log=logf,
                    extra_env={"AUTORESEARCH_FD": str(child.fileno())},
                )
            child.close()
            mp = ModelProc(name, sp, chan, log_path)
            mp.weights = (Path(MODEL_DIR_INSIDE) if bw else wdir) / WEIGHTS_NAME
            mp.wdir = wdir
            procs.append(mp)
            chan.send(
                {
                    "op": "spec",
                    "preset": preset.name,
                    "device": device,
                    "seed": int(seed),
                    "bos_id": bos_id,
                    "threads": preset.threads,
                    # MFU exists only on a GPU (harness/mfu.py), and counting costs a CPU run about
                    # a CPU-second: FlopCounterMode imports dynamo, which nothing else there needs.
                    "count_flops": bool(count_flops and i == 0 and device.startswith("cuda")),
                    "rows": preset.eval_batch_size,
                    "compile": bool(preset.compile_scoring and device_type == "cuda") or bool(test_backend),
                    "compile_backend": test_backend or "inductor",
                    "train_file": TRAIN_INSIDE if bw else str(train_file),
                    **(inprocess or {}),
                }
            )
    except BaseException:
        stop_models(procs, device)
        raise
    return procs


def stop_models(procs: list[ModelProc], device: str) -> None:
    """Kill the model processes and let go of their buffers (idempotent)."""
    for mp in procs:
        mp.sp.kill()
        if mp.view is not None and device.startswith("cuda") and mp.kind == "host":
            with contextlib.suppress(Exception):
                import torch

                torch.cuda.cudart().cudaHostUnregister(mp.view.data_ptr())
        mp.view = None
        if mp.buffer is not None:
            with contextlib.suppress(Exception):
                mp.buffer.close()
            mp.buffer = None
        with contextlib.suppress(Exception):
            mp.chan.close()
        with contextlib.suppress(Exception):
            mp.sp.proc.wait(timeout=10)


def score(procs: list[ModelProc], *, data, preset, device: str, weights: Path, log=print) -> dict:
    """Score `weights` (a verified safetensors file) with the model processes `start_models` started.
    Returns the result fields; raises ScoreFailure for the candidate's failures. Anything else is a
    harness failure. The caller stops the processes (stop_models) whatever happens."""
    t0 = time.monotonic()
    deadline = t0 + preset.eval_timeout_seconds
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    val = data.val_tokens()
    rows = eval_rows(val, data.bos_id, preset.eval_batch_size, preset.seq_len, preset.eval_tokens)
    token_bytes = data.token_bytes()
    rng = random.SystemRandom()
    plan = make_plan(rows, val, preset.vocab_size, rng)
    tally = Tally(plan, token_bytes, device_type)
    B, T, V = preset.eval_batch_size, preset.seq_len, preset.vocab_size
    for i, mp in enumerate(procs):
        mp.items = list(plan.work[i])
        dest = mp.wdir / WEIGHTS_NAME
        try:  # a second name for our copy, not a third copy (0.1 s per 200 MB on the gpu preset)
            os.link(weights, dest)
        except OSError:  # another filesystem
            shutil.copyfile(weights, dest)
        os.chmod(dest, 0o444)
    t_started = time.monotonic()

    def recv_any(timeout: float):
        socks = {mp.chan.fileno(): mp for mp in procs if mp.sp.poll() is None or mp.chan._buf}
        r, _, _ = select.select(list(socks) or [procs[0].chan.fileno()], [], [], timeout)
        out = []
        for fd in r:
            mp = socks.get(fd)
            if mp is None:
                continue
            try:
                got = mp.chan.recv(timeout=0)
            except ChannelClosed:
                raise mp.failure(None) from None
            except ProtocolError as e:
                raise ScoreFailure("invalid", f"invalid: a model process broke the protocol: {e}") from None
            if got is not None:
                out.append((mp, got[0]))
        for mp in procs:
            if mp.sp.poll() is not None and not r:
                raise mp.failure(None)
        return out

    def check_deadline():
        if time.monotonic() > deadline:
            raise ScoreFailure(
                "timeout", f"timeout: evaluation did not finish within {preset.eval_timeout_seconds:g} s"
            )

    def wait_all(expect: str, other=None) -> list[dict]:
        """Every process's answer `expect`; `other(mp, msg)` may handle another message (True), and
        anything else (a "fail" included) is the candidate's failure."""
        replies: dict[int, dict] = {}
        while len(replies) < len(procs):
            check_deadline()
            for mp, msg in recv_any(POLL_S):
                i = procs.index(mp)
                if i not in replies and msg.get("op") == expect:
                    replies[i] = msg
                elif not (other is not None and other(mp, msg)):
                    raise mp.failure(msg)
        return [replies[i] for i in range(len(procs))]

    for mp, msg in zip(procs, wait_all("built"), strict=True):  # long done: they started with the training
        mp.built = msg
    t_built = time.monotonic()
    compiled = bool(procs) and all(mp.built.get("compiled") is True for mp in procs)
    for mp in procs:
        mp.chan.send({"op": "load", "weights": str(mp.weights), "compiled": compiled})
    wait_all("ready")
    t_ready = time.monotonic()

    def buffer_reply(mp, msg):
        if msg.get("op") == "buffer_failed" and mp.kind != "host":
            log(
                f"harness: the {mp.kind} logits transport failed in a model process "
                f"({bounded(str(msg.get('error')), 300)}); "
                "copying logits through host memory"
            )
            mp.buffer.close()
            mp.kind, mp.buffer, mp.view = make_buffer(B, T, V, device, transport="host")
            mp.chan.send({"op": "buffer", "rows": B, "kind": mp.kind}, fds=(mp.buffer.fd,))
            return True
        return False

    for mp in procs:
        mp.kind, mp.buffer, mp.view = make_buffer(B, T, V, device)
        mp.chan.send({"op": "buffer", "rows": B, "kind": mp.kind}, fds=(mp.buffer.fd,))
    wait_all("buffer_ok", buffer_reply)
    transport = "/".join(sorted({mp.kind for mp in procs}))

    def send_next(mp: ModelProc) -> None:
        if not mp.items:
            mp.inflight = None
            return
        batch, mp.items = mp.items[:B], mp.items[B:]
        toks = np.stack([(plan.twins[r] if tw else plan.rows[r])[:-1] for r, tw in batch]).astype(np.int32)
        mp.inflight = batch
        mp.chan.send({"op": "forward", "b": len(batch), "t": T}, toks.tobytes())

    for mp in procs:
        send_next(mp)
    t_forward = time.monotonic()
    t_first, tally_s = None, 0.0
    if device_type == "cuda":
        import torch  # once, not per batch; a CPU run's supervisor never imports it
    else:  # reused for every batch: Tally.add keeps only what _picks gathers (new arrays), no view
        scratch = (np.empty((B, T, V), np.float32), np.empty((B, T, V), np.float32))
    while any(mp.inflight for mp in procs):
        check_deadline()
        for mp, msg in recv_any(POLL_S):
            if msg.get("op") != "logits" or not mp.inflight or msg.get("b") != len(mp.inflight):
                raise mp.failure(msg)
            batch = mp.inflight
            t_got = time.monotonic()
            t_first = t_first or t_got
            logits = mp.view[: len(batch)]
            if device_type == "cuda":
                if mp.kind == "host":
                    logits = logits.to(device, non_blocking=True)
                lp = torch.log_softmax(logits, dim=-1)
                torch.cuda.current_stream().synchronize()  # read out before the model may overwrite it
            else:
                lp = log_softmax_np(logits, scratch)  # a copy: the model may overwrite the buffer now
            send_next(mp)  # the model computes the next batch while we score this one
            tally.add(lp, batch)
            tally_s += time.monotonic() - t_got
            del lp, logits
            if tally.nonfinite:
                break
        if tally.nonfinite:
            break
    for mp in procs:
        if mp.sp.poll() is None:
            with contextlib.suppress(OSError):
                mp.chan.send({"op": "exit"})
    t_end = time.monotonic()
    flops = procs[0].built.get("flops_per_token") if procs and procs[0].built else None
    out = {
        "val_nats": tally.nats,
        "eval_bytes": tally.bytes,
        "eval_tokens": tally.scored,
        "eval_rows": int(len(plan.rows)),
        "eval_seconds": round(t_end - t0, 3),
        "eval_startup_seconds": round(t_ready - t_started, 3),  # waiting for the build, then the load
        "eval_build_wait_seconds": round(t_built - t_started, 3),
        "eval_transport": transport,
        "eval_compiled": compiled,
        "eval_compile_seconds": [mp.built.get("compile_s") for mp in procs],
        # where the scoring's time went (s): to the first logits (the model processes' first forward),
        # in the scorer's own reading of the logits, and the rest of the loop (waiting for forwards)
        "eval_phases": {
            "setup_s": round(t_forward - t0, 3),
            "first_logits_s": round((t_first or t_end) - t_forward, 3),
            "scorer_s": round(tally_s, 3),
            "loop_s": round(t_end - t_forward, 3),
        },
        "flops_per_token": flops if isinstance(flops, int | float) else None,
        "probe": {
            "rows_compared": tally.compared,
            "max_diff_nats": tally.max_diff,
            "tolerance_nats": tally.tol,
            "columns": TWIN_COLUMNS + 1,
        },
    }
    if tally.nonfinite or not math.isfinite(tally.nats):
        raise ScoreFailure("nan", "nan: the model's validation log-probabilities are not finite")
    out["val_bpb"] = bpb(tally.nats, tally.bytes)
    out["val_loss"] = tally.nats / max(1, tally.scored)
    return out
