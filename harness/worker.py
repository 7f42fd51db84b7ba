"""The child process of a run: set up the harness, import and run train.py, evaluate, report.

Started by the supervisor as `python -P -m harness.worker` in its own session, with a scrubbed
environment, the run's spec as one JSON line on stdin, stdout/stderr going to the run's log file
and one pipe (the spec's event_fd) for JSON-line events to the supervisor, each signed with a
per-run nonce from the spec (a forged event, e.g. a fake result written by train.py, lacks it):

    ready          the harness is set up (torch imported, data opened, snapshot taken, hook installed)
    clock_started  ctx.start_clock() or the first training batch
    progress       step, loss, tokens (from ctx.log, at most once a second)
    train_done     train(ctx) returned or raised (after a CUDA synchronize)
    result         the outcome: status, val_bpb and the rest of what the worker measured
    infra_error    the harness itself could not start (exit 3)

The supervisor timestamps these with its own clock; nothing here decides how long training took.

Order matters: everything evaluation depends on is imported, snapshotted and captured, and the audit
hook is installed, before a single line of train.py runs (see harness/integrity.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback

TRACEBACK_TAIL_CHARS = 4000


def _event_writer(fd: int, nonce: str):
    """emit(event, **fields): one JSON line on the event pipe, signed with the run's nonce. A closure,
    not an object, so the nonce is not an attribute train.py could read off ctx. Never raises: a
    broken pipe means the supervisor is gone."""

    def emit(event: str, **fields) -> None:
        line = (json.dumps({**fields, "event": event, "n": nonce}, default=str) + "\n").encode()
        try:
            while line:
                k = os.write(fd, line)
                line = line[k:]
        except OSError:
            pass

    return emit


def _ctx_emitter(emit):
    """What ctx may send: the clock and progress events, never train_done or a result."""

    def ctx_emit(event: str, **fields) -> None:
        if event in ("clock_started", "progress"):
            emit(event, **fields)

    return ctx_emit


def _tail(text: str, limit: int = TRACEBACK_TAIL_CHARS) -> str:
    return text if len(text) <= limit else "..." + text[-limit:]


def _exc_tail(exc: BaseException) -> str:
    return _tail("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())


def _say(msg: str) -> None:
    print(f"[harness] {msg}", flush=True)


def _import_harness():
    """Import every harness module now, so none is first imported (or written as .pyc) later."""
    import importlib

    from harness.integrity import HARNESS_DIR

    for p in sorted(HARNESS_DIR.glob("*.py")):
        if p.stem not in ("__main__", "__init__"):
            importlib.import_module(f"harness.{p.stem}")


def protected_paths(data, preset) -> list[str]:
    """What no code in the worker may open outside the evaluator's read window."""
    from harness.data import cache_root

    paths: set[str] = set()
    if hasattr(data, "protected_paths"):
        paths.update(str(p) for p in data.protected_paths())
    paths.add(str(data.val_path))
    split = data.manifest.get("split", {})
    if data.source == "climbmix":
        for name in split.get("val", []):
            paths.add(str(cache_root() / "raw" / "climbmix" / name))
    from harness.corpus import MissingCorpusError, package_dir

    for corpus in preset.offline_corpus:
        with contextlib.suppress(MissingCorpusError):  # not installed: nothing there to read
            paths.add(str(package_dir(corpus)))
    return sorted(paths)


def _pre_import_torch() -> None:
    """Let torch make the changes to itself that it otherwise makes lazily during training, so the
    snapshot records the patched objects: importing torch._dynamo wraps torch.manual_seed, and the
    first torch.compile wraps nn.Module.__init__ for generation tagging."""
    import torch._dynamo
    import torch.utils.flop_counter  # noqa: F401

    try:
        from torch._dynamo.mutation_guard import install_generation_tagging_init

        install_generation_tagging_init()
    except ImportError:
        pass


def _setup(spec: dict, emit) -> dict:
    import random

    import numpy as np
    import torch

    _pre_import_torch()

    import harness
    from harness import HarnessError

    _import_harness()
    from harness.data import cache_root, load_prepared
    from harness.dataloader import piece_starts
    from harness.integrity import HARNESS_DIR, AuditGuard, Snapshot
    from harness.presets import get_preset

    preset = get_preset(spec["preset"])
    device = spec.get("device") or preset.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"CUDA was requested (device {device!r}) but torch.cuda.is_available() is False")
    if device.startswith("cuda"):
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
    data = load_prepared(preset)
    if str(data.dir) != spec["data_dir"]:
        raise HarnessError(f"the worker found the data in {data.dir}, the supervisor in {spec['data_dir']}")
    train_tokens = data.train_tokens()
    train_starts = piece_starts(
        train_tokens, data.bos_id
    )  # before the clock: harness time, not the candidate's
    gpu_name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None

    snapshot = Snapshot()
    guard = AuditGuard(
        protected_paths(data, preset),
        [HARNESS_DIR, cache_root()],
        private_fds=[spec["event_fd"]],
        candidate_files=[spec["train_file"]],
    )
    guard.install()
    return {
        "preset": preset, "device": device, "data": data, "train_tokens": train_tokens,
        "train_starts": train_starts, "snapshot": snapshot, "guard": guard, "gpu_name": gpu_name,
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": sys.version.split()[0],
                     "cuda": torch.version.cuda},
        "_keep": (random, harness),
    }  # fmt: skip


def _load_train(path: str):
    """Import train.py by path as the module `train`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train"] = mod
    spec.loader.exec_module(mod)
    return mod


def _peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _run(spec: dict, st: dict, emit) -> dict:
    import random

    import numpy as np
    import torch

    from harness import TrainingDiverged
    from harness.context import Context
    from harness.evaluate import InvalidModel, ModelCrash, evaluate
    from harness.integrity import CONTRACT, static_scan

    preset, device, guard = st["preset"], st["device"], st["guard"]
    res: dict = {"device": device, "gpu_name": st["gpu_name"], "foreign_audit_hooks": guard.foreign_hooks}

    def violations() -> dict | None:
        if guard.violations:
            v = guard.violations
            more = f" (and {len(v) - 1} more)" if len(v) > 1 else ""
            return {**res, "status": "invalid", "error": f"invalid: train.py {v[0]}{more}", "violations": v}
        return None

    # 1. the static scan
    path = spec["train_file"]
    with open(path, encoding="utf-8") as f:
        source = f.read()
    problems = static_scan(source, path)
    if problems:
        more = "".join(f"\n  {p}" for p in problems[1:8])
        return {
            **res,
            "status": "invalid",
            "error": f"invalid: {problems[0]}{more}\nThe contract: {CONTRACT}.",
        }

    # 2. import train.py and find train(ctx)
    seed = int(spec["seed"])
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    _say(f"importing {os.path.basename(path)}")
    try:
        mod = _load_train(path)
    except BaseException as e:  # noqa: BLE001 (SystemExit, KeyboardInterrupt too: the candidate's)
        return violations() or {
            **res,
            "status": "crash",
            "error": f"crash: importing train.py failed\n{_exc_tail(e)}",
        }
    fn = getattr(mod, "train", None)
    if not callable(fn):
        return violations() or {
            **res,
            "status": "invalid",
            "error": "invalid: train.py has no train function. The contract: train.py defines "
            "`def train(ctx) -> torch.nn.Module`; the harness calls it once and scores the model it returns.",
        }

    # 3. train
    ctx = Context(
        preset, seed=seed, device=device, train_tokens=st["train_tokens"], train_starts=st["train_starts"],
        bos_id=st["data"].bos_id, spawn_time=spec["spawn_time"], emit=_ctx_emitter(emit),
    )  # fmt: skip
    _say(f"training: budget {preset.budget_seconds:g} s on {device}, seed {seed}")
    model, failure = None, None
    try:
        model = fn(ctx)
    except TrainingDiverged as e:
        failure = {"status": "nan", "error": f"nan: {e}"}
    except BaseException as e:  # noqa: BLE001
        failure = {"status": "crash", "error": f"crash: train(ctx) raised\n{_exc_tail(e)}"}
    if device.startswith("cuda"):
        try:
            torch.cuda.synchronize()
        except Exception as e:  # an illegal memory access surfaces here: the candidate's crash
            failure = failure or {
                "status": "crash",
                "error": f"crash: CUDA failed after training\n{_exc_tail(e)}",
            }
    emit("train_done", steps=ctx.num_steps, tokens=ctx.tokens_seen)
    res.update(
        num_steps=ctx.num_steps,
        train_tokens=ctx.tokens_seen,
        peak_memory_mb=round(_peak_memory_mb(device), 1),
        last_train_loss=ctx.last_loss,
    )  # fmt: skip
    bad = violations()
    if bad:
        return bad
    if failure:
        return {**res, **failure}

    # 4. evaluate
    _say("evaluating")
    try:
        ev = evaluate(model, data=st["data"], preset=preset, device=device, snapshot=st["snapshot"],
                      reading_val=guard.reading_val())  # fmt: skip
    except InvalidModel as e:
        return violations() or {**res, "status": "invalid", "error": f"invalid: {e}"}
    except ModelCrash as e:
        cause = e.__cause__ or e
        return violations() or {**res, "status": "crash", "error": f"crash: {e}\n{_exc_tail(cause)}"}
    except PermissionError as e:
        return violations() or {**res, "status": "infra_error", "error": f"harness error: {_exc_tail(e)}"}
    bad = violations()
    if bad:
        return bad
    res.update(ev)
    if ev.get("nonfinite"):
        return {**res, "status": "nan", "error": "nan: the validation loss is not finite"}
    return {**res, "status": "ok", "error": None}


def main(argv: list[str] | None = None) -> int:
    # The spec (with the nonce that signs every event) comes on stdin, not argv or the environment,
    # so it is not in /proc/self/cmdline or /proc/self/environ for train.py to read.
    line = sys.stdin.readline() if argv is None else argv[0]
    spec = json.loads(line)
    nonce = spec.pop("nonce")
    sys.stdin.close()
    fd = int(spec["event_fd"])
    os.set_inheritable(fd, False)  # subprocesses started by train.py do not get the event pipe
    emit = _event_writer(fd, nonce)
    del nonce, line
    try:
        st = _setup(spec, emit)
    except BaseException as e:  # noqa: BLE001
        emit("infra_error", error=f"the harness worker could not start: {_exc_tail(e)}")
        sys.stdout.flush()
        os._exit(3)
    emit("ready", versions=st["versions"], device=st["device"], gpu_name=st["gpu_name"])
    try:
        result = _run(spec, st, emit)
    except BaseException as e:  # noqa: BLE001 (a harness bug, not the candidate's doing)
        result = {"status": "infra_error", "error": f"harness error: {_exc_tail(e)}"}
        if st["guard"].violations:
            result = {"status": "invalid", "error": f"invalid: train.py {st['guard'].violations[0]}"}
    emit("result", **result)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)  # not sys.exit: threads or atexit handlers train.py left behind must not hold us


if __name__ == "__main__":
    import harness.worker as _w  # run as the importable module, so its globals are snapshotted too

    sys.exit(_w.main())
