"""The GPU path, checked on a CUDA machine: the sandbox with the GPU in it, training and twin scoring
on CUDA, both logits transports, the tolerance seen in bf16, and what isolation costs there.

    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py --out DIR

Prepares the tiny preset's data (AUTORESEARCH_CACHE, default a temporary directory), runs
tests/redteam/honest.py on it with --device cuda three times (bwrap + the CUDA VMM transport, bwrap +
the host-memory transport, isolation none) and times the two transports on one batch of the gpu
preset's evaluation ([32, 2048, 8192] float32 logits), extrapolated to its 20,480 rows (originals and
twins). Prints everything and writes DIR/gpu-check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = (
    "status",
    "isolation",
    "isolation_version",
    "eval_transport",
    "probe",
    "training_seconds",
    "num_steps",
    "startup_seconds",
    "eval_seconds",
    "eval_startup_seconds",
    "total_seconds",
    "val_bpb",
    "error",
    "cpu_counter",
)


def harness_run(tmp: Path, name: str, env: dict) -> dict:
    d = tmp / name
    d.mkdir()
    out = d / "m.json"
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "run",
        str(REPO / "tests" / "redteam" / "honest.py"),
        "--preset",
        "tiny",
        "--device",
        "cuda",
        "--out",
        str(out),
        "--quiet",
    ]
    p = subprocess.run(cmd, env=dict(os.environ, **env), cwd=d, capture_output=True, text=True)
    m = json.loads(out.read_text()) if out.exists() else {"status": "no metrics", "error": p.stderr[-3000:]}
    row = {k: m.get(k) for k in KEYS}
    print(f"{name}: {json.dumps(row)[:1500]}", flush=True)
    if m.get("status") != "ok":
        print((m.get("log_tail") or "")[-3000:], p.stdout[-2000:], p.stderr[-2000:], flush=True)
    return row


def transport_bench() -> dict:
    import numpy as np
    import torch

    from harness.channel import LogitsBuffer
    from harness.cuda_ipc import VmmBuffer

    B, T, V = 32, 2048, 8192
    batches = 2 * (40 * 524288 // T) // B  # originals and twins of the gpu preset's rows
    x = torch.randn(B, T, V, device="cuda")
    res = {"batch_bytes": x.numel() * 4, "batches": batches}

    def timed(fn, n=3):
        fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - t) / n

    hb = LogitsBuffer(B * T * V * 4)
    host = torch.from_numpy(np.frombuffer(hb.map, dtype=np.float32).reshape(B, T, V))
    torch.cuda.cudart().cudaHostRegister(host.data_ptr(), host.numel() * 4, 0)
    res["host_d2h_s"] = timed(lambda: host.copy_(x))
    res["host_h2d_s"] = timed(lambda: host.to("cuda", non_blocking=True))
    vb = VmmBuffer(B * T * V * 4, 0)
    vt = vb.tensor((B, T, V))
    res["vmm_d2d_s"] = timed(lambda: vt.copy_(x))
    res["log_softmax_s"] = timed(lambda: torch.log_softmax(x, -1))
    for k in ("host", "vmm"):
        per = res["host_d2h_s"] + res["host_h2d_s"] if k == "host" else res["vmm_d2d_s"]
        res[f"{k}_transport_seconds_gpu_preset"] = per * batches
    res["log_softmax_seconds_gpu_preset"] = res["log_softmax_s"] * batches
    print("transport:", json.dumps(res), flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    a = ap.parse_args()
    import torch

    from harness.sandbox import probe

    info = {
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "probe": probe(),
    }
    print("info:", info, flush=True)
    res: dict = {"info": info}
    try:
        res["transport"] = transport_bench()
    except Exception as e:
        res["transport"] = {"error": f"{type(e).__name__}: {e}"}
        print("transport failed:", e, flush=True)
    cache = Path(os.environ.get("AUTORESEARCH_CACHE") or tempfile.mkdtemp(prefix="cache-"))
    os.environ["AUTORESEARCH_CACHE"] = str(cache)
    t = time.perf_counter()
    from harness.data import prepare
    from harness.presets import get_preset

    prepare(get_preset("tiny"), progress=False)
    res["prepare_seconds"] = time.perf_counter() - t
    tmp = Path(tempfile.mkdtemp(prefix="gpucheck-"))
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))}
    res["bwrap_vmm"] = harness_run(tmp, "bwrap_vmm", env)
    res["bwrap_host"] = harness_run(tmp, "bwrap_host", {**env, "AUTORESEARCH_CUDA_TRANSPORT": "host"})
    res["none_vmm"] = harness_run(tmp, "none_vmm", {**env, "AUTORESEARCH_TEST_ISOLATION_NONE": "1"})
    out = Path(a.out) / "gpu-check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
