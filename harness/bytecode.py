"""Warm the trusted bytecode directory with what sandboxed interpreters import, once per install.

Sandboxed interpreters read bytecode only from the harness's own directory (harness/protocol.py:
trusted_pycache_dir, bound read-only into the sandbox) and write none. A module that no trusted
process ever imported is therefore compiled from source in every sandboxed process of every run.
The supervisor imports torch but not torch._dynamo, which the worker and the model processes import
before train.py (harness/worker.py: setup_torch), and which pulls in sympy: measured on a 2-core
machine, `import torch, torch._dynamo` took 7.4 CPU-seconds with that directory cold against 3.1 with
bytecode, and a run starts three such processes (the worker and two model processes). On a GPU,
torch.compile imports inductor and triton the same way, in every process that compiles.

So, once per interpreter, torch version and device kind, a trusted interpreter imports the same modules
into that directory (and on CUDA compiles inductor's and triton's sources there too); a stamp file
records that it was done. It is an optimisation only: when it fails, runs are slower, not different.
The sources compiled are the installed packages' own (the interpreter's roots, which no sandbox can
write), so the bytecode is what Python itself would have written beside them.

    python -X pycache_prefix=DIR -m harness.bytecode cpu|cuda MODULE...   (what ensure_warm runs)
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import os
import subprocess
import sys
import time

# What the worker and the model processes import before a line of train.py runs, and what the
# repository's train.py imports on the CPU.
MODULES = (
    "numpy",
    "torch",
    "torch.nn",
    "torch.nn.functional",
    "torch._dynamo",
    "torch.utils.flop_counter",
    "safetensors.torch",
)
# torch.compile on CUDA imports far more than a module list could name: whole packages, compiled,
# with the packages outside torch that its compiler imports as it goes (sympy's printers in code
# generation, networkx in the partitioner)...
CUDA_PACKAGES = ("torch._inductor", "torch._dynamo", "torch._functorch", "triton", "sympy", "networkx")
# ...and, imported, the compiler's entry point, for the rest of what it imports (jinja2, filelock,
# parts of torch.ao and torch._export): without it, a sandbox that compiles found no bytecode for
# about 380 modules (networkx's 285 among them), measured with torch 2.13 on a CPU machine.
CUDA_MODULES = ("torch._inductor.compile_fx",)
TIMEOUT_S = 900.0  # compiling inductor and triton from source takes a minute or two on a slow machine
VERSION = 2  # bump when MODULES or the CUDA lists change, so installs warmed by the old lists warm again


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def device_kind(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


def stamp_path(prefix: str, device: str, modules=MODULES) -> str:
    kind = device_kind(device)
    key = "|".join(
        [str(VERSION), sys.version, sys.executable, _dist_version("torch"), _dist_version("triton"), kind]
        + list(modules)
    )
    return os.path.join(prefix, f".warm-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")


def ensure_warm(prefix: str | None, device: str, log=print, modules=MODULES) -> float | None:
    """Warm `prefix` for `device` unless a stamp says it was done; seconds spent, None when skipped.

    `prefix` is the trusted bytecode directory the sandboxes will see (None: they get an empty one and
    warming would not reach them). Concurrent callers wait on a lock, so only one of them compiles."""
    if not prefix:
        return None
    if not os.path.exists("/dev/nvidiactl"):
        # The CUDA warm-up compiles torch's compiler packages: pointless where no GPU can run the
        # sandbox (the worker then reports CUDA missing as an infra error).
        device = "cpu"
    stamp = stamp_path(prefix, device, modules)
    if os.path.exists(stamp):
        return None
    import fcntl

    try:
        os.makedirs(prefix, exist_ok=True)
        lock = open(os.path.join(prefix, ".warm.lock"), "a")  # noqa: SIM115 (held to the end below)
    except OSError as e:  # a read-only state (a mounted volume): slower runs, never a failed one
        log(
            f"[harness] warning: the bytecode directory {prefix} cannot be written ({e.strerror or e}); "
            "sandboxed processes compile what they import from source in every run. Give the harness "
            "a writable state directory: AUTORESEARCH_STATE"
        )
        return None
    with lock:
        # A filesystem without locks (some network volumes) warms unlocked: two warm-ups at once only
        # compile twice, since Python writes each .pyc whole (a temporary file, then a rename).
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(stamp):  # another run warmed it while this one waited
            return None
        kind = device_kind(device)
        log(f"[harness] compiling the bytecode sandboxed processes import (once per install, {kind})")
        t0 = time.monotonic()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        # By the environment too, not only -X: on Python 3.12 compileall's worker processes come from
        # a forkserver, which does not pass -X pycache_prefix on (on the H200 machine a warm-up with
        # -X alone left 155 of torch._inductor's modules without bytecode in the prefix).
        env["PYTHONPYCACHEPREFIX"] = prefix
        try:
            p = subprocess.run(
                [sys.executable, "-X", f"pycache_prefix={prefix}", "-m", "harness.bytecode", kind, *modules],
                env=env,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            log(f"[harness] warning: warming the bytecode failed ({e}); sandboxed processes compile it")
            return None
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
            log(f"[harness] warning: warming the bytecode failed ({tail[0]}); sandboxed processes compile it")
            return None
        tmp = f"{stamp}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(p.stdout)
        os.replace(tmp, stamp)
        return time.monotonic() - t0


def warm_for_preset(preset_name: str, prefix: str | None, log=print) -> float | None:
    """ensure_warm for the device a run of `preset_name` uses: what the set-up steps call (`python -m
    harness prepare`, `autoresearch-ci prepare-data`), so that the first run on an install does not
    pay it outside its budget (13-16 s on an H200 host, benchmarks/README.md). Never raises for a
    failed warm-up: that only makes the first run slower."""
    from harness.presets import get_preset

    try:
        seconds = ensure_warm(prefix, get_preset(preset_name).run_device(), log=log)
    except OSError as e:  # the stamp could not be written (a full disk): the data is prepared all the same
        log(f"[harness] warning: warming the bytecode failed ({e}); the first run compiles it")
        return None
    if seconds is not None:
        log(f"harness: compiled the bytecode sandboxed runs import in {seconds:.1f}s (once per install)")
    return seconds


def _warm(kind: str, modules) -> list[str]:
    """Import `modules` (and compile CUDA_PACKAGES for cuda) in this interpreter; what was done. A
    module that is not installed is skipped; any other failure is the warm-up's (exit non-zero)."""
    done = []
    for name in modules:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
            done.append(name)
    if kind == "cuda":
        import compileall

        for name in CUDA_MODULES:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
                done.append(name)
        for name in CUDA_PACKAGES:
            try:
                mod = importlib.import_module(name)
            except ImportError:
                continue
            for d in getattr(mod, "__path__", []):
                compileall.compile_dir(d, quiet=2, workers=0)
            done.append(f"{name} (compiled)")
    return done


if __name__ == "__main__":
    if not sys.pycache_prefix:
        sys.exit("harness.bytecode: run with -X pycache_prefix=DIR (it warms that directory)")
    kind = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    for line in _warm(kind, sys.argv[2:]):
        print(line)
