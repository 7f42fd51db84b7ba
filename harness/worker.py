"""The training process: runs train.py inside the sandbox and hands back the trained weights.

Started by the supervisor (through harness/sandbox.py) as `python -m harness.worker`, with the
socket's descriptor number in AUTORESEARCH_FD and the run's spec as the first message on it. It
holds no secret and nothing it says is believed beyond what it could do to itself: the supervisor
keeps the clock, serves the batches and reads the weights file; a forged message can at worst make
this candidate's own result worse.

    -> ready      versions, device
    <- / -> clock, batch, log     (harness/context.py)
    -> returned   train(ctx) came back (steps, tokens, peak memory): timestamped by the supervisor
    -> done       the state_dict is saved as safetensors in the scratch directory
    -> fail       status crash / nan / invalid with the reason (the candidate's own failure)

Order matters: privileges are dropped before anything is imported, the thread count is fixed
before torch is (the sandbox's environment), torch is imported before the spec is read (the
supervisor seeds the compile cache meanwhile), and the in-process layer (harness/integrity.py's
audit hook) is installed before a line of train.py runs.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time

from harness.sandbox import drop_privileges

TRACEBACK_TAIL_CHARS = 4000
WEIGHTS_NAME = "weights.safetensors"


def tail(text: str, limit: int = TRACEBACK_TAIL_CHARS) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def cut_lines(text: str, line_chars: int) -> str:
    """Every line of `text` cut to at most `line_chars` characters (an ellipsis marks a cut)."""
    return "\n".join(
        ln if len(ln) <= line_chars else ln[: line_chars - 3] + "..." for ln in text.splitlines()
    )


def exc_tail(exc: BaseException, line_chars: int = 1000) -> str:
    """The end of the traceback, each line cut first: an exception whose message is one huge line
    still shows its type and the start of its message."""
    import traceback

    return tail(
        cut_lines("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip(), line_chars)
    )


def say(msg: str) -> None:
    print(f"[harness] {msg}", flush=True)


def open_channel():
    import socket

    from harness.channel import Channel

    fd = int(os.environ.pop("AUTORESEARCH_FD"))
    return Channel(socket.socket(fileno=fd))


def hold_gc() -> None:
    """No cyclic garbage collection while the harness imports torch (and torch._dynamo): the imports
    make hundreds of thousands of objects that live as long as the process, and every collection on
    the way traverses them again. Measured: about a quarter of the imports' CPU time (2.4 -> 1.9
    CPU-seconds for torch and torch._dynamo), in every sandboxed process of every run."""
    gc.disable()


def release_gc() -> None:
    """Before any code of the candidate runs: what the harness's imports made is moved out of the
    collector's sight for good (gc.freeze: it is never garbage), and collection is on again, as in
    any Python process."""
    gc.freeze()
    gc.enable()


def setup_torch(threads: int, device: str, seed: int, dynamo: bool = True):
    """Threads, seeds and deterministic kernels, before train.py exists in this process.

    dynamo: import torch._dynamo now (with the sympy it pulls in: about a CPU-second even from
    bytecode). The worker does, so that no candidate's clock pays for it: the first step of any
    torch.optim optimizer imports it (its methods are wrapped in torch._disable_dynamo), as does
    torch.compile. A model process on the CPU only runs forward passes and skips it. (The audit
    hook has no quarrel with a later import: importing or running dynamo patches no tensor type.)"""
    import random

    import numpy as np
    import torch

    torch.set_num_threads(int(threads))
    if not device.startswith("cuda"):
        # The flag itself, not torch.use_deterministic_algorithms: that also imports inductor's
        # config, and with it dynamo, in processes that need neither.
        set_flag = getattr(torch._C, "_set_deterministic_algorithms", None)
        if set_flag is not None:
            set_flag(True, warn_only=True)
        else:
            torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if dynamo:
        import torch._dynamo  # noqa: F401

    return torch


def warm_compiler() -> None:
    """On CUDA, before train.py: what a first torch.compile() imports, and inductor's compile pool.

    torch.compile's inductor backend (torch._inductor.compile_fx, some 590 modules, about a second)
    is imported here, while the collector is still held (hold_gc) and then frozen with the rest,
    rather than inside the candidate's first compile() with the collector running. And the pool that
    compiles Triton kernels (one sidecar process and a worker per compile thread, each importing
    torch) is started now: inductor starts it only when the first traced graph reaches its backend,
    so a cold compile's first kernels wait for the workers to boot. Measured on an H200 outside the
    harness (benchmarks/README.md, "Starting the compiler early"): the template's cold warm-up with
    both done early took 25.3 s of import and compile against 27.7-29.8 s; through the harness, A/B
    on two hosts, 7.5-8.6 s outside the budget warm against 8.6-9.4. A candidate that never
    compiles pays the pool's start-up in CPU time on the GPU machine's other cores, not on its clock
    (wall time, which starts later). No-op without triton or with one compile thread (inductor's own
    checks: the CPU presets, a sandbox without /dev/shm)."""
    from torch._inductor.async_compile import maybe_warm_pool

    maybe_warm_pool()
    import torch._inductor.compile_fx  # noqa: F401
    import torch._inductor.compiler_bisector  # noqa: F401  (the last module torch.compile() imports)


class CudaWarmup(threading.Thread):
    """CUDA's initialisation, its context and a cuBLAS handle, made in a thread while the main thread
    imports torch._dynamo: work the candidate's first CUDA operations would otherwise wait for.

    torch.cuda.init() only starts the driver; the context is made by the first allocation and cuBLAS
    by the first matrix product, both inside train.py's model build. torch's operators release the
    GIL while they run, and the import is Python, so the two overlap. Safe to run beside the import:
    torch.cuda's lazy initialisation holds a lock (a CUDA call from the main thread meanwhile waits
    for it) and imports nothing; the seeds are set before the thread starts (setup_torch), so the
    initialisation applies the CUDA generator's queued seed as before; the thread is joined before
    the ready message, so nothing of it runs beside train.py. Its allocation is freed; the peak
    memory statistics are reset after it."""

    def __init__(self, torch, device: str):
        super().__init__(name="cuda-warmup", daemon=True)
        self.torch, self.device = torch, device
        self.error: str | None = None
        self.seconds = 0.0
        self.start()

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            torch = self.torch
            torch.cuda.init()
            dev = torch.device(self.device)
            a = torch.ones((256, 256), device=dev, dtype=torch.bfloat16)  # the context, the allocator
            b = a @ a  # a cuBLAS handle (back in torch's pool for the main thread when this one ends)
            torch.cuda.synchronize(dev)
            del a, b
        except Exception as e:  # noqa: BLE001 (reported by the main thread as the infra error it is)
            self.error = f"{type(e).__name__}: {e}"[:2000]
        self.seconds = time.monotonic() - t0


def install_guard(spec: dict, candidate: str):
    """The in-process layer (a second line; see harness/integrity.py), unless a test turned it off."""
    if not spec.get("inprocess"):
        return None
    from harness.integrity import AuditGuard

    guard = AuditGuard(spec.get("protected", []), spec.get("locked", []), candidate_files=[candidate])
    guard.install()
    return guard


def load_train(path: str):
    """Import train.py by path as the module `train`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train"] = mod
    spec.loader.exec_module(mod)
    return mod


MISSING = (
    "train.py must define both `def build_model(ctx) -> torch.nn.Module` (the untrained network on "
    "ctx.device) and `def train(ctx) -> torch.nn.Module` (the trained one, whose state_dict() loads "
    "strictly into build_model(ctx))"
)


def entry_points(mod) -> str | None:
    missing = [n for n in ("build_model", "train") if not callable(getattr(mod, n, None))]
    if missing:
        return f"train.py has no {' and no '.join(missing)} function. The contract: {MISSING}"
    return None


def unwrap(model):
    """The module behind torch.compile's OptimizedModule (and nested wrappers of it)."""
    seen = 0
    while hasattr(model, "_modules") and "_orig_mod" in model._modules and seen < 8:
        model = model._modules["_orig_mod"]
        seen += 1
    return model


def compile_counters() -> dict:
    """torch.compile's cache hits and misses in this process so far: whether a warm start found the
    compile cache (harness/compile_cache.py). The candidate's own process: informational only."""
    dynamo = sys.modules.get("torch._dynamo.utils")
    if dynamo is None:
        return {}
    out = {}
    for group, keys in (
        ("inductor", ("fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass")),
        ("aot_autograd", ("autograd_cache_hit", "autograd_cache_miss", "autograd_cache_bypass")),
        ("stats", ("unique_graphs",)),
    ):
        for k in keys:
            v = dynamo.counters.get(group, {}).get(k)
            if v:
                out[k] = int(v)
    return out


def compile_seconds(top: int = 12) -> dict:
    """torch.compile's own timers in this process (seconds summed per timed function, the largest
    first): where a compile warm-up went (tracing, inductor, Triton, cache loads). Informational."""
    dynamo = sys.modules.get("torch._dynamo.utils")
    metrics = getattr(dynamo, "compilation_time_metrics", None) or {}
    totals = {str(k): float(sum(v)) for k, v in metrics.items() if v}
    return {k: round(v, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])[:top]}


def compile_stats() -> dict:
    """Both of the above, or none: statistics never fail a run (train.py may have changed torch)."""
    try:
        return {"compile_counters": compile_counters(), "compile_seconds": compile_seconds()}
    except Exception:  # noqa: BLE001
        return {}


def guard_violation(guard) -> str | None:
    if guard is not None and guard.violations:
        v = guard.violations
        return f"invalid: train.py {v[0]}" + (f" (and {len(v) - 1} more)" if len(v) > 1 else "")
    return None


def main() -> int:
    times = {"entry": time.monotonic()}  # on the machine's monotonic clock, which the supervisor shares
    drop_privileges()
    chan = open_channel()
    hold_gc()
    # torch before the spec: the supervisor seeds the compile cache meanwhile (compile_cache.seed),
    # and the import needs nothing the spec says (the thread count is in the environment).
    __import__("torch")  # timed apart from torch._dynamo
    times["torch"] = time.monotonic()
    spec, _ = chan.recv()
    times["spec"] = time.monotonic()  # the wait for the supervisor's seed, if any

    def fail(status: str, error: str) -> int:
        chan.send({"op": "fail", "status": status, "error": error})
        sys.stdout.flush()
        os._exit(0)

    device = spec["device"]
    cuda = device.startswith("cuda")
    torch = setup_torch(spec["threads"], device, int(spec["seed"]), dynamo=False)
    if cuda and not torch.cuda.is_available():
        chan.send({"op": "infra", "error": f"CUDA was requested (device {device!r}) but is not available"})
        os._exit(3)
    warm = CudaWarmup(torch, device) if cuda else None  # beside the compiler import: see CudaWarmup
    import torch._dynamo  # noqa: F401  (setup_torch's reason: no candidate's clock pays for it)

    if cuda:
        warm_compiler()

    times["compiler"] = time.monotonic()
    import numpy as np

    from harness import TrainingDiverged
    from harness.context import Context
    from harness.presets import get_preset

    preset = get_preset(spec["preset"])
    if warm is not None:
        warm.join()
        if warm.error is not None:
            chan.send({"op": "infra", "error": f"CUDA could not be initialised on {device!r}: {warm.error}"})
            os._exit(3)
        torch.cuda.reset_peak_memory_stats()
        say(f"CUDA context ready after {warm.seconds:.2f} s, made beside the compiler import")
    gpu = torch.cuda.get_device_name(torch.device(device)) if cuda else None
    times["device"] = time.monotonic()
    chan.send(
        {
            "op": "ready",
            "times": times,
            "device": device,
            "gpu_name": gpu,
            "threads": torch.get_num_threads(),
            "versions": {
                "torch": torch.__version__,
                "numpy": np.__version__,
                "python": sys.version.split()[0],
                "cuda": torch.version.cuda,
            },
        }
    )

    path = spec["train_file"]
    release_gc()
    guard = install_guard(spec, path)
    if guard is not None:
        # A violation settles the verdict (invalid, whatever the candidate does next): end the run at
        # once, before its clock starts the model processes or a GPU trains on for nothing. A
        # candidate that silences this only reaches the same verdict after train() returns.
        guard.on_violation = lambda _msg: fail("invalid", guard_violation(guard))
    say(f"importing {os.path.basename(path)}")
    try:
        mod = load_train(path)
    except BaseException as e:  # noqa: BLE001 (SystemExit, KeyboardInterrupt too: the candidate's)
        return fail("crash", guard_violation(guard) or f"crash: importing train.py failed\n{exc_tail(e)}")
    missing = entry_points(mod)
    if missing:
        return fail("invalid", f"invalid: {missing}")

    ctx = Context(preset, seed=int(spec["seed"]), device=device, bos_id=int(spec["bos_id"]), chan=chan)
    say(
        f"training: budget {preset.budget_seconds:g} {preset.clock}-seconds on {device}, "
        f"seed {spec['seed']}, {torch.get_num_threads()} thread(s)"
    )
    try:
        model = mod.train(ctx)
    except TrainingDiverged as e:
        return fail("nan", f"nan: {e}")
    except BaseException as e:  # noqa: BLE001
        return fail("crash", guard_violation(guard) or f"crash: train(ctx) raised\n{exc_tail(e)}")
    if device.startswith("cuda"):
        try:
            torch.cuda.synchronize()
        except Exception as e:  # an illegal memory access surfaces here: the candidate's crash
            return fail("crash", f"crash: CUDA failed after training\n{exc_tail(e)}")
    peak = (torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None
    chan.send(
        {
            "op": "returned",
            "steps": ctx.num_steps,
            "tokens": ctx.tokens_seen,
            "last_loss": ctx.last_loss,
            "peak_memory_mb": peak,
            **compile_stats(),
        }
    )
    bad = guard_violation(guard)
    if bad:
        return fail("invalid", bad)

    model = unwrap(model)
    if not isinstance(model, torch.nn.Module):
        return fail(
            "invalid",
            "invalid: train(ctx) must return a torch.nn.Module, "
            f"got {type(model).__module__}.{type(model).__qualname__}",
        )
    try:
        from safetensors.torch import save_file

        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
        bad_keys = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
        if bad_keys:
            return fail("invalid", f"invalid: state_dict() entries that are not tensors: {bad_keys[:5]}")
        out = os.path.join(os.environ["HOME"], WEIGHTS_NAME)
        save_file(state, out)
    except Exception as e:
        return fail("crash", f"crash: saving the trained model's state_dict() failed\n{exc_tail(e)}")
    chan.send({"op": "done", "file": WEIGHTS_NAME})
    sys.stdout.flush()
    os._exit(0)  # threads or atexit handlers train.py left behind must not hold us


if __name__ == "__main__":
    sys.exit(main())
