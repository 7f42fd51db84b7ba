"""A model process of the scoring: rebuilds the candidate's network in a sandbox and serves logits.

Started twice per run by harness/scorer.py (the two processes share nothing), each in its own
sandbox with train.py read-only, an empty read-only directory where the trained weights will
appear, a private scratch directory and a socket: no training data, no validation file, no clock.
They start while the candidate trains (so their start-up is not added to the run), import train.py,
call `build_model(ctx)`, then wait for the weights, load them strictly, switch to eval() and answer:

    <- spec                                   preset, device, threads, where train.py is
    -> built        flops_per_token           (informational: counted here, so the candidate could lie)
    <- load         weights                   the trained weights are in place now
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

import mmap
import os
import sys

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

    def forward(x):
        with torch.no_grad():
            if cuda:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return model(x)
            return model(x)

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
    chan.send({"op": "built", "flops_per_token": flops})

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
        try:
            logits = forward(x)
        except BaseException as e:  # noqa: BLE001
            return fail("crash", f"crash: the model raised during evaluation\n{exc_tail(e)}")
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


if __name__ == "__main__":
    sys.exit(main())
