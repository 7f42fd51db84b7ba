"""A model process of the scoring: rebuilds the candidate's network in a sandbox and serves logits.

Started twice per run by harness/scorer.py (the two processes share nothing), each in its own
sandbox with train.py read-only, an empty read-only directory where the trained weights will
appear, a private scratch directory and a socket: no training data, no validation file, no clock.
They start while the candidate trains (so their start-up is not added to the run), import train.py,
call `build_model(ctx)`, then wait for the weights, load them strictly, switch to eval() and answer:

    <- spec                                   preset, device, threads, where train.py is, rows per
                                              batch, whether to compile the forward (GPU presets)
    -> built        flops_per_token, compiled (flops: informational, counted here, so the candidate
                                              could lie; compiled: the forward compiled, or eager)
    <- load         weights, compiled         the trained weights are in place now; compiled: use the
                                              compiled forward (true only when both processes have one)
    -> ready
    <- buffer       + a fd (SCM_RIGHTS): where the logits go, float32 [rows, T, vocab]: a sealed memfd,
                    or GPU memory the scorer exported (harness/cuda_ipc.py)
    -> buffer_ok | buffer_failed error        (a GPU buffer that cannot be imported here: the scorer
                                              sends a host one instead)
    <- forward      b, t + int32 tokens       -> logits (the first vocab_size columns) in the buffer
    -> fail         status, error             the candidate's own failure (crash / invalid)

The scorer never sees which rows are originals and which are twins, and neither does this process.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
import time

from harness.sandbox import drop_privileges


def main() -> int:
    drop_privileges()
    from harness.worker import (
        entry_points,
        exc_tail,
        hold_gc,
        install_guard,
        load_train,
        open_channel,
        release_gc,
        say,
        setup_torch,
    )

    chan = open_channel()
    spec, _ = chan.recv()

    def fail(status: str, error: str) -> int:
        chan.send({"op": "fail", "status": status, "error": error})
        sys.stdout.flush()
        os._exit(0)

    device = spec["device"]
    hold_gc()
    torch = setup_torch(spec["threads"], device, int(spec["seed"]), dynamo=device.startswith("cuda"))
    import numpy as np

    from harness.context import ModelContext
    from harness.presets import get_preset

    preset = get_preset(spec["preset"])
    V, T = preset.vocab_size, preset.seq_len
    cuda = device.startswith("cuda")
    release_gc()
    guard = install_guard(spec, spec["train_file"])
    try:
        mod = load_train(spec["train_file"])
    except BaseException as e:  # noqa: BLE001
        return fail("crash", f"crash: importing train.py in the model process failed\n{exc_tail(e)}")
    missing = entry_points(mod)
    if missing:
        return fail("invalid", f"invalid: {missing}")
    ctx = ModelContext(preset, seed=int(spec["seed"]), device=device, bos_id=int(spec["bos_id"]))
    try:
        model = mod.build_model(ctx)
    except BaseException as e:  # noqa: BLE001
        return fail("crash", f"crash: build_model(ctx) raised\n{exc_tail(e)}")
    if not isinstance(model, torch.nn.Module):
        return fail(
            "invalid",
            "invalid: build_model(ctx) must return a torch.nn.Module, "
            f"got {type(model).__module__}.{type(model).__qualname__}",
        )

    def forward(x, m=model):
        with torch.no_grad():
            if cuda:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return m(x)
            return m(x)

    flops = None
    if spec.get("count_flops"):
        try:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                forward(torch.randint(0, V - 1, (1, T), device=device))
            flops = 3.0 * float(counter.get_total_flops()) / T
        except Exception as e:  # a model FlopCounterMode cannot follow: no MFU, not a failure
            say(f"FLOP count failed: {type(e).__name__}: {e}")
    rows = int(spec.get("rows") or 0)
    compiled, compile_s = None, None
    if spec.get("compile") and rows:
        model.eval()  # first: the train/eval flag is part of what the compiled code assumes
        backend = str(spec.get("compile_backend") or "inductor")
        compiled, compile_s = compile_forward(torch, model, forward, rows, T, V, device, backend)
    chan.send(
        {"op": "built", "flops_per_token": flops, "compiled": compiled is not None, "compile_s": compile_s}
    )

    msg, _ = chan.recv()
    if msg.get("op") != "load":
        return fail("crash", "crash: the model process did not get its weights")
    try:
        from safetensors.torch import load_file

        state = load_file(str(msg["weights"]), device=device)
    except Exception as e:
        return fail("crash", f"crash: the trained weights could not be read\n{exc_tail(e)}")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as e:
        return fail(
            "invalid",
            "invalid: the state_dict() of the model train(ctx) returned does not load "
            f"strictly into build_model(ctx): {str(e)[:2000]}",
        )
    del state
    model.eval()
    # Compiled only when every model process compiled (the scorer says so): the two compute the rows
    # and their twins, which must agree, so both run the same code.
    fwd_model = compiled if compiled is not None and msg.get("compiled") else model
    chan.send({"op": "ready"})

    out = None
    while out is None:
        msg, _, fds = chan.recv(with_fds=True)
        if msg.get("op") != "buffer" or len(fds) != 1:
            return fail("crash", "crash: the model process did not get its logits buffer")
        rows = int(msg["rows"])
        try:
            if msg.get("kind") == "vmm":  # GPU memory the scorer exported (harness/cuda_ipc.py): zero copy
                from harness.cuda_ipc import VmmBuffer

                dev_index = torch.device(device).index or 0
                out = VmmBuffer(rows * T * V * 4, dev_index, fd=fds[0]).tensor((rows, T, V))
            else:
                buf = mmap.mmap(fds[0], rows * T * V * 4, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                out = torch.from_numpy(np.frombuffer(buf, dtype=np.float32).reshape(rows, T, V))
                if cuda:
                    torch.cuda.cudart().cudaHostRegister(out.data_ptr(), out.numel() * 4, 0)
        except Exception as e:  # the harness's transport, not the candidate: say so, get another
            chan.send({"op": "buffer_failed", "error": f"{type(e).__name__}: {e}"[:500]})
            continue
        finally:
            os.close(fds[0])
        chan.send({"op": "buffer_ok"})
    guard_msg = None
    while True:
        msg, payload = chan.recv()
        if msg.get("op") == "exit":
            break
        b, t = int(msg["b"]), int(msg["t"])
        x = torch.from_numpy(np.frombuffer(payload, dtype=np.int32).reshape(b, t).astype(np.int64)).to(device)
        if fwd_model is not model and b < rows:  # the compiled shape: pad with copies of the last row
            x = torch.cat([x, x[-1:].expand(rows - b, t)])
        try:
            logits = forward(x, fwd_model)
        except BaseException as e:  # noqa: BLE001
            return fail("crash", f"crash: the model raised during evaluation\n{exc_tail(e)}")
        if (
            fwd_model is not model
            and type(logits) is torch.Tensor
            and logits.dim() == 3
            and len(logits) == rows
        ):
            logits = logits[:b]  # the padding's rows away (a model that returned other rows fails below)
        if type(logits) is not torch.Tensor:
            return fail(
                "invalid",
                "invalid: model(idx) must return a plain torch.Tensor of logits "
                f"[B, T, V >= vocab_size], got {type(logits).__module__}.{type(logits).__qualname__}",
            )
        if logits.dim() != 3 or tuple(logits.shape[:2]) != (b, t) or logits.shape[2] < V:
            return fail(
                "invalid",
                f"invalid: model(idx) must return logits of shape [B, T, V >= {V}] = "
                f"[{b}, {t}, >={V}], got {list(logits.shape)}",
            )
        if not logits.dtype.is_floating_point:
            return fail(
                "invalid", f"invalid: model(idx) must return floating-point logits, got {logits.dtype}"
            )
        try:
            out[:b, :t].copy_(logits[:, :, :V])
            if cuda:
                torch.cuda.synchronize()
        except BaseException as e:  # noqa: BLE001
            return fail("crash", f"crash: the model's logits could not be read\n{exc_tail(e)}")
        if guard is not None and guard.violations and guard_msg is None:
            guard_msg = guard.violations[0]
            return fail("invalid", f"invalid: train.py {guard_msg}")
        chan.send({"op": "logits", "b": b, "t": t})
    os._exit(0)


def same_kernels_in_both() -> bool:
    """Inductor's deterministic mode for the scoring's compile: reduction configurations chosen by
    rule, never by timing them on the GPU (nor their blocks halved for occupancy at run time).

    The two model processes compile the same graph apart, with a cold cache on a candidate's first
    run, while the candidate trains on the same GPU. Where inductor times several configurations of
    a reduction, the two can pick different ones, and a reduction split another way rounds
    differently. Seen on an H200 (benchmarks/README.md, "The CUDA JIT cache kept"): an honest
    train.py's first run ended `invalid`, a row and its twin 0.028 nats apart (tolerance 0.002),
    where every warm run, both processes loading the same kernels, measures 0.0. Pointwise kernels
    may still be timed: their configuration changes no value. False where this torch has no such
    mode (then as before)."""
    import torch._inductor.config as inductor_config

    if not hasattr(inductor_config, "deterministic"):
        return False
    inductor_config.deterministic = True
    return True


def compile_forward(torch, model, forward, rows: int, T: int, V: int, device: str, backend="inductor"):
    """(the compiled model, seconds) or (None, seconds): the candidate's forward compiled for the
    scoring, while the candidate still trains, from the harness's compile cache (seeded from this
    train.py's partition; what it compiles is never kept, since this process sees the validation
    rows: harness/compile_cache.py).

    The batch dimension is dynamic, so the warm-up forward needs only 2 rows of activations and
    logits: it runs beside the candidate's training on the same GPU, whose memory is the
    candidate's. The scoring pads its last batch to `rows`, so one compiled graph serves it all;
    after the warm-up a guard that fails runs eager rather than compiling again in the middle of the
    scoring. Whatever the compile raises, the scoring runs eager (and the other process too)."""
    from harness.worker import say

    cuda = device.startswith("cuda")
    t0 = time.monotonic()
    compiled = None
    try:
        import torch._dynamo

        if backend == "inductor":
            same_kernels_in_both()
        compiled = torch.compile(model, backend=backend)
        x = torch.randint(0, V, (2, T), device=device)
        torch._dynamo.mark_dynamic(x, 0, min=2, max=max(rows, 2))
        out = forward(x, compiled)
        if type(out) is not torch.Tensor:
            raise TypeError(f"the compiled forward returned {type(out).__name__}")
        if cuda:
            torch.cuda.synchronize()
        del x, out
        torch.compiler.set_stance("eager_on_recompile")
    except BaseException as e:  # noqa: BLE001 (the candidate's code: eager then, as without a compiler)
        say(f"the scoring forward was not compiled ({type(e).__name__}: {str(e)[:300]}); eager")
        compiled = None
        with contextlib.suppress(Exception):
            torch._dynamo.reset()
    if cuda:
        torch.cuda.empty_cache()  # the warm-up's memory back to the GPU the candidate trains on
    seconds = round(time.monotonic() - t0, 3)
    if compiled is not None:
        say(f"scoring forward compiled in {seconds:.1f} s")
    return compiled, seconds


if __name__ == "__main__":
    sys.exit(main())
