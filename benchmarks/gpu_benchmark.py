"""GPU benchmark of the baseline train.py: throughput, MFU and the time spent outside the budget.

    python benchmarks/gpu_benchmark.py run   [--out-dir DIR]   the gpu preset through the harness
    python benchmarks/gpu_benchmark.py sweep [CASE ...] [--deadline S] [--out-dir DIR]
                                                        variants of train.py, ~45-60 s each
    python benchmarks/gpu_benchmark.py compile-cpu CASE ...
                                                        a hint without a GPU: each case's regions
                                                        compiled cold by inductor on the CPU (C++
                                                        kernels, the same chain of FX graphs)
    python benchmarks/gpu_benchmark.py profile          where the warm-up and a step go: first calls
                                                        timed, the optimizer step's GPU time against
                                                        the forward and backward (CUDA events), kernels

`run` is the number to quote: `python -m harness run train.py --preset gpu` exactly as the loop runs
it, then a table from its metrics.json (MFU with the peak it divides by, tokens/s, steps, val_bpb,
training vs total seconds, start-up and evaluation seconds, peak memory).

`sweep` is for choosing the baseline's shape and its compile: what each variant of train.py (other
constants, a patch of its source, inductor settings: SWEEP) does to the cold compile and to
tokens/s. Each case runs in a fresh process with empty Inductor, Triton and CUDA caches (so compile
times are cold), drives train.py's own `train(ctx)` with a stand-in context that serves random
tokens for a short budget, and counts FLOPs the way the harness does (as harness/modelproc.py does:
FlopCounterMode on one [1, seq_len] forward, times 3), the Triton kernels built (a census: launch
configurations per kernel, by kind, since a graph waits for its slowest kernel's) and the case's CPU
seconds. A cold compile varies by seconds from run to run: name the cases of an A/B alternately,
each more than once. It also compares regional compilation (what train.py does) with compiling the
whole model, and times the evaluation's forward pass, so the evaluation time of a 21M-token
climbmix split can be projected even when the cache holds the small offline corpus.

Both write JSON under --out-dir (default benchmarks/results) and print a table last.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# Source patches for the sweep's variants of train.py (what it is now -> the variant).
QKV_THREE_MATMULS = (
    """        w = torch.cat([self.c_q.weight, self.c_k.weight, self.c_v.weight])
        q, k, v = F.linear(x, w).view(B, T, 3, self.n_head, self.head_dim).unbind(2)
""",
    """        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
""",
)
POINTWISE_TWO = ("triton.autotune_pointwise = False", "triton.autotune_pointwise = True")
VE_EVERY_BLOCK = ("return VALUE_EMBEDS > 0 and layer % 2 == (depth - 1) % 2", "return VALUE_EMBEDS > 0")
WHOLE_MODEL = (
    """        for block in model.blocks:
            block.compile(dynamic=False)
        model.head.compile(dynamic=False)
""",
    """        model.compile(dynamic=False)
""",
)
# Blocks without a value embedding get a gate too and zeros for a value embedding, so all the blocks
# compile to one graph (two FX graphs fewer in a cold compile). The same model: the extra gates see a
# zero input, get zero gradients and stay at zero.
VE_ZEROS = [
    (
        "self.blocks = nn.ModuleList([Block(dim, head_dim, i in ve_layers) for i in range(depth)])",
        "self.blocks = nn.ModuleList([Block(dim, head_dim, bool(ve_layers)) for i in range(depth)])",
    ),
    (
        "ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None",
        "ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else ve_zeros",
    ),
    (
        "            x = x0.clone()",
        "            ve_zeros = x0 * 0 if len(self.value_embeds) else None\n            x = x0.clone()",
    ),
]
# The value embedding added to v in v's dtype (bf16 under autocast on CUDA), not in float32: today a
# block with one computes its q, k and v in float32 and casts them for the attention. On the CPU,
# where nothing is autocast, the same code.
VE_BF16 = (
    "            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_head, self.head_dim)\n",
    "            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_head, self.head_dim).to(v.dtype)\n",
)
# The value-embedding gate as a product and a sum, not a linear layer: a [tokens, 32] x [32, heads]
# matmul is a poor GEMM for cuBLAS (and a slice's gradient for the backward), while inductor can fuse
# the sum into the kernels around it. The same gate, computed in float32.
GATE_SUM = (
    "            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))\n",
    "            gate = 2 * torch.sigmoid((x[..., :VE_GATE_CHANNELS, None] * self.ve_gate.weight.T)"
    ".sum(-2))\n",
)
# Reduction kernels autotuned again (two or three launch configurations each, compiled and timed at
# the first call), as before train.py kept one per kernel (its sweep name was one-reduction-config).
REDUCTIONS_AUTOTUNED = (
    "inductor_config.test_configs.force_filter_reduction_configs = True",
    "inductor_config.test_configs.force_filter_reduction_configs = False",
)
NO_OPTIMIZER_STEP = (
    "        for opt in optimizers:\n            opt.step()\n        model.zero_grad",
    "        model.zero_grad",
)

# (name, train.py constant overrides, options). Options: budget (seconds of training), whole
# (compile the whole model instead of regions), sdpa (force one attention backend), inductor
# (torch._inductor.config settings by dotted name, made before train.py runs), patch ((old, new)
# replacements in train.py's source: a variant of the code, not only of its constants).
SWEEP = [
    # The shapes and compile modes that chose the baseline (2026-11-22, when its batch was 32).
    ("d8-w512-b32", {"GPU_DEVICE_BATCH": 32}, {}),
    ("d8-w512-b32-whole", {"GPU_DEVICE_BATCH": 32}, {"whole": True}),
    ("d8-w512-b32-flash", {"GPU_DEVICE_BATCH": 32}, {"sdpa": "flash"}),
    ("d8-w512-b32-cudnn", {"GPU_DEVICE_BATCH": 32}, {"sdpa": "cudnn"}),
    ("d8-w512-b64", {"GPU_DEVICE_BATCH": 64}, {}),
    ("d8-w512-h64", {"GPU_DEVICE_BATCH": 32, "GPU_HEAD_DIM": 64}, {}),
    ("d8-w768-b32", {"GPU_DEVICE_BATCH": 32, "GPU_MODEL_DIM": 768}, {}),
    ("d12-w768-b32", {"GPU_DEVICE_BATCH": 32, "GPU_DEPTH": 12, "GPU_MODEL_DIM": 768}, {}),
    # What a cold compile of train.py costs and what cuts it, and tokens/s without a change to the
    # model (issue 12; benchmarks/README.md, "Fewer kernels, one matmul for q, k and v"). Each
    # variant undoes or extends one choice of train.py: inductor's two launch configs per pointwise
    # kernel (train.py keeps one), three matmuls for q, k and v (train.py has one), value embeddings
    # in every block or in none (one block graph instead of two: a different model), batch 256 (the
    # same optimizer steps; twice the memory, 107 GB: too much for an 80-GB H100), no pattern
    # matcher, no optimizer step (a diagnostic: weights that never move), and the whole model compiled
    # as one region instead of per block (two FX graphs instead of six, each unrolled over the depth),
    # every block with a value-embedding gate, zeros where it has none (four FX graphs: the same
    # model, a little more work in the blocks without one), the value embedding added in bf16, the
    # gate as a product and a sum, reduction kernels autotuned (train.py keeps one launch config
    # each) and inductor's deterministic mode.
    ("base", {}, {}),
    ("pointwise-2", {}, {"patch": [POINTWISE_TWO]}),
    ("qkv-three-matmuls", {}, {"patch": [QKV_THREE_MATMULS]}),
    ("ve-every-block", {}, {"patch": [VE_EVERY_BLOCK]}),
    ("ve-none", {"VALUE_EMBEDS": 0}, {}),
    ("b256", {"GPU_DEVICE_BATCH": 256}, {}),
    ("no-pattern-matcher", {}, {"inductor": {"pattern_matcher": False}}),
    ("no-optimizer-step", {}, {"patch": [NO_OPTIMIZER_STEP]}),
    ("whole-model", {}, {"patch": [WHOLE_MODEL]}),
    ("ve-zeros", {}, {"patch": VE_ZEROS}),
    ("ve-bf16", {}, {"patch": [VE_BF16]}),
    ("ve-zeros-bf16", {}, {"patch": [*VE_ZEROS, VE_BF16]}),
    ("gate-sum", {}, {"patch": [GATE_SUM]}),
    ("ve-zeros-gate-sum", {}, {"patch": [*VE_ZEROS, GATE_SUM]}),
    ("reductions-autotuned", {}, {"patch": [REDUCTIONS_AUTOTUNED]}),
    ("inductor-deterministic", {}, {"inductor": {"deterministic": True}}),
]
CASES = {name: (overrides, opts) for name, overrides, opts in SWEEP}
SEQ_LEN, VOCAB, EVAL_BATCH, EVAL_TOKENS = 2048, 8192, 32, 40 * 524288  # the gpu preset's


# ------------------------------------------------------------------------------------------------
# run: the real thing, through the harness
# ------------------------------------------------------------------------------------------------


def run_harness(out_dir: Path, preset: str = "gpu") -> dict:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = out_dir / f"gpu-{stamp}.json"
    cmd = [sys.executable, "-m", "harness", "run", "train.py", "--preset", preset, "--out", str(out)]
    print("$", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=REPO, check=False)
    wall = time.monotonic() - t0
    m = json.loads(out.read_text())
    m["benchmark"] = {"command": " ".join(cmd[1:]), "date": stamp, "wall_seconds": round(wall, 1)}
    out.write_text(json.dumps(m, indent=1))
    print_run_table(m)
    return m


def phase_rows(phases: dict | None, indent: str) -> list[tuple[str, str]]:
    """One row per phase of the harness's startup_phases / finish_phases (seconds, in order)."""
    return [(f"{indent}{name}", fmt(v, ".2f")) for name, v in (phases or {}).items()]


def print_run_table(m: dict) -> None:
    startup, eval_s = m.get("startup_seconds"), m.get("eval_seconds")
    train_s, total_s = m.get("training_seconds"), m.get("total_seconds")
    peak = m.get("mfu_peak_flops")
    outside = total_s - train_s if total_s and train_s else None
    peak_text = f"{peak / 1e12:.1f} TFLOP/s ({m.get('mfu_peak_source')})" if peak else "n/a"
    rows = [
        ("status", m.get("status")),
        ("device", m.get("device_name") or m.get("device")),
        ("torch", m.get("torch_version")),
        ("val_bpb", fmt(m.get("val_bpb"), ".4f")),
        ("MFU %", fmt(m.get("mfu_percent"), ".1f")),
        ("  peak it divides by", peak_text),
        ("  FLOPs/token (harness count)", fmt(m.get("flops_per_token"), ".4g")),
        ("tokens/s", fmt(m.get("tokens_per_second"), ",.0f")),
        ("train tokens", fmt(m.get("train_tokens"), ",")),
        ("optimizer steps", m.get("num_steps")),
        ("params", fmt(m.get("num_params"), ",")),
        ("training seconds", fmt(train_s, ".1f")),
        ("total seconds", fmt(total_s, ".1f")),
        ("outside the budget (total - training)", fmt(outside, ".1f")),
        ("  start-up (spawn to clock start; below, harness_s comes before the spawn)", fmt(startup, ".1f")),
        *phase_rows(m.get("startup_phases"), "    "),
        (
            "      of harness_s: bytecode warm-up (once per install)",
            fmt(m.get("bytecode_warm_seconds"), ".2f"),
        ),
        ("      of harness_s: compile cache seeded (bytes)", fmt(m.get("compile_cache_seeded_bytes"), ",")),
        (
            "  after training (training end to result)",
            fmt(sum((m.get("finish_phases") or {}).values()), ".1f"),
        ),
        *phase_rows(m.get("finish_phases"), "    "),
        ("  evaluation", fmt(eval_s, ".1f")),
        ("  the scoring's compile, per model process (beside the training)", m.get("eval_compile_seconds")),
        ("peak memory MB", fmt(m.get("peak_memory_mb"), ",.0f")),
    ]
    if m.get("error"):
        rows.append(("error", m["error"][:300]))
    print_table(rows)


# ------------------------------------------------------------------------------------------------
# sweep: shapes and compile modes, each in a fresh process
# ------------------------------------------------------------------------------------------------


class BenchContext:
    """Contract 3 over random tokens on the GPU, with a wall-clock budget."""

    def __init__(self, budget: float):
        import torch

        self.torch = torch
        self.device, self.seq_len, self.vocab_size = "cuda", SEQ_LEN, VOCAB
        self.budget_seconds = budget
        self.t_created = time.monotonic()
        self.t_clock = None
        self.tokens_seen = 0
        self.steps = 0
        self.losses = []

    def warmup_batch(self, batch_size, seq_len=None):
        return self._batch(batch_size)

    def _batch(self, b):
        row = self.torch.randint(0, self.vocab_size, (b, self.seq_len + 1), device="cuda")
        return row[:, :-1], row[:, 1:]

    def start_clock(self):
        if self.t_clock is None:
            self.torch.cuda.synchronize()
            self.t_clock = time.monotonic()

    def elapsed(self):
        return 0.0 if self.t_clock is None else time.monotonic() - self.t_clock

    def time_left(self):
        return max(0.0, self.budget_seconds - self.elapsed())

    def progress(self):
        return min(1.0, self.elapsed() / self.budget_seconds)

    def train_batches(self, batch_size, seq_len=None):
        self.start_clock()
        while self.time_left() > 0:
            self.tokens_seen += batch_size * self.seq_len
            yield self._batch(batch_size)

    def log(self, step, loss, **extra):
        self.steps = max(self.steps, int(step) + 1)
        self.losses.append(float(loss))


def flops_per_token(model, seq_len: int, vocab: int, device: str) -> float:
    """Training FLOPs per token as the harness counts them (harness/modelproc.py): 3 x the FLOPs of
    one [1, seq_len] forward, counted by torch.utils.flop_counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randint(0, vocab, (1, seq_len), device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    return 3.0 * float(counter.get_total_flops()) / seq_len


def _run_batch(model, x, y, token_bytes, vocab: int, device: str):
    """One evaluation batch the way the scoring does it: the model's logits, then float32
    log-softmax and the targets' nats and bytes (harness/scorer.py, without the twin probe)."""
    import torch

    with torch.no_grad():
        logits = model(x)
        lp = torch.log_softmax(logits.float().view(-1, vocab), dim=-1)
        nats = -lp.gather(1, y.reshape(-1, 1)).sum()
        return nats, token_bytes[y].sum()


def load_train(patch=()):
    """train.py as a module, with its source changed by (old, new) replacements first."""
    import types

    src = (REPO / "train.py").read_text()
    for old, new in patch:
        if old not in src:
            raise SystemExit(f"a sweep case patches {old!r}, which train.py no longer has: update the case")
        src = src.replace(old, new)
    mod = types.ModuleType("train")
    mod.__file__ = str(REPO / "train.py")
    sys.modules["train"] = mod
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def load_case(overrides: dict, opts: dict):
    """train.py as a sweep case has it: its source patched, then its constants overridden."""
    mod = load_train(opts.get("patch", ()))
    for k, v in overrides.items():
        setattr(mod, k, v)
    return mod


def set_inductor_option(name: str, value) -> None:
    """torch._inductor.config.<name> = value, for a dotted name ("triton.autotune_pointwise")."""
    import torch._inductor.config as cfg

    *path, leaf = name.split(".")
    obj = cfg
    for part in path:
        obj = getattr(obj, part)
    if not hasattr(obj, leaf):
        raise SystemExit(f"torch._inductor.config has no {name} in this torch: update the case")
    setattr(obj, leaf, value)


# Inductor names a kernel for what it generated it from; a cubin is one launch configuration of one.
KERNEL_KINDS = {"poi": "pointwise", "red": "reduction", "per": "persistent_reduction", "tem": "template"}


def kernel_census(cache: Path) -> dict:
    """The Triton cubins a cold compile built, by kernel: a kernel that inductor autotunes gets one
    cubin per candidate configuration, all compiled (one after another, in one pool worker) before
    its graph can run, so the kernels with many configurations are where a graph waits."""
    from collections import Counter

    configs = Counter(cubin.stem for cubin in cache.rglob("*.cubin"))
    by_kind: dict[str, dict[str, int]] = {}
    for name, n in configs.items():
        kind = KERNEL_KINDS.get(name.split("_")[1] if name.startswith("triton_") else "", "other")
        entry = by_kind.setdefault(kind, {"kernels": 0, "configs": 0})
        entry["kernels"] += 1
        entry["configs"] += n
    most = sorted(configs.items(), key=lambda kv: (-kv[1], kv[0]))[:8]  # most_common, ties by name
    return {"by_kind": by_kind, "most_configs": [{"kernel": k, "configs": n} for k, n in most if n > 1]}


def compile_stats() -> dict:
    """What the cold compile did: torch.compile's timers and counters as the harness reports them,
    and the Triton kernels (cubins: one per configuration) it built into TRITON_CACHE_DIR."""
    from harness.worker import compile_stats as timers

    cache = os.environ.get("TRITON_CACHE_DIR")
    if not cache or not Path(cache).is_dir():
        return {**timers(), "triton_kernels_built": None}
    census = kernel_census(Path(cache))
    cubins = sum(kind["configs"] for kind in census["by_kind"].values())
    return {**timers(), "triton_kernels_built": cubins, "kernel_census": census}


def sweep_case(name: str, overrides: dict, opts: dict) -> dict:
    """One case, in this (fresh) process. Returns the measurements."""
    t_start = time.monotonic()
    import torch

    from harness.mfu import peak_flops

    t_import = time.monotonic() - t_start
    mod = load_case(overrides, opts)
    for k, v in opts.get("inductor", {}).items():
        set_inductor_option(k, v)
    res = {"name": name, "overrides": overrides, "opts": opts, "import_s": round(t_import, 2)}
    gpu = torch.cuda.get_device_name()
    peak, _ = peak_flops(gpu)
    res["gpu"] = gpu

    if opts.get("sdpa"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[opts["sdpa"]]
        sdpa_ctx = sdpa_kernel([backend])
    else:
        sdpa_ctx = None

    if opts.get("whole"):
        # Compile the whole model as one graph instead of per block: compile time and throughput.
        torch.backends.cuda.matmul.allow_tf32 = True
        model = mod.GPT(VOCAB, SEQ_LEN, mod.GPU_DEPTH, mod.GPU_MODEL_DIM, mod.GPU_HEAD_DIM).cuda()
        cmodel = torch.compile(model, dynamic=False)
        b = mod.GPU_DEVICE_BATCH
        x = torch.randint(0, VOCAB, (b, SEQ_LEN), device="cuda")
        t0 = time.monotonic()
        cmodel(x, x).backward()
        torch.cuda.synchronize()
        res["compile_train_s"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        with torch.no_grad():
            cmodel(x)
        torch.cuda.synchronize()
        res["compile_eval_s"] = round(time.monotonic() - t0, 2)
        opt = mod.build_optimizers(model, mod.GPU_MODEL_DIM, torch.device("cuda"))
        accum = mod.GPU_TOTAL_BATCH // (b * SEQ_LEN)
        n = 0
        torch.cuda.synchronize()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            for _ in range(accum):
                cmodel(x, x).backward()
            for o in opt:
                o.step()
            model.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            n += accum * b * SEQ_LEN
        secs = time.monotonic() - t0
        res["tokens_per_s"] = round(n / secs)
        res["flops_per_token"] = flops_per_token(model, SEQ_LEN, VOCAB, "cuda")
        res["mfu"] = round(100 * res["flops_per_token"] * n / secs / peak, 2)
        res["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
        return res

    budget = float(opts.get("budget", 10))
    ctx = BenchContext(budget)
    t0 = time.monotonic()
    if sdpa_ctx is not None:
        with sdpa_ctx:
            model = mod.train(ctx)
    else:
        model = mod.train(ctx)
    torch.cuda.synchronize()
    t_end = time.monotonic()
    res["warmup_s"] = round(ctx.t_clock - t0, 2)  # model build + compile + warm-up step
    res.update(compile_stats())
    res["train_s"] = round(t_end - ctx.t_clock, 2)
    res["steps"] = ctx.steps
    res["tokens_per_s"] = round(ctx.tokens_seen / (t_end - ctx.t_clock))
    res["params"] = sum(p.numel() for p in model.parameters())
    res["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)

    # The evaluation's forward + scoring on [32, 2048] batches, as the harness runs it.
    token_bytes = torch.randint(1, 8, (VOCAB,), device="cuda")
    xs = [torch.randint(0, VOCAB, (EVAL_BATCH, SEQ_LEN + 1), device="cuda") for _ in range(2)]
    model.eval()
    t0 = time.monotonic()
    _run_batch(model, xs[0][:, :-1], xs[0][:, 1:], token_bytes, VOCAB, "cuda")
    torch.cuda.synchronize()
    res["eval_first_batch_s"] = round(time.monotonic() - t0, 2)
    n = 10
    t0 = time.monotonic()
    for i in range(n):
        x = xs[i % 2]
        _run_batch(model, x[:, :-1], x[:, 1:], token_bytes, VOCAB, "cuda")
    torch.cuda.synchronize()
    per_batch = (time.monotonic() - t0) / n
    res["eval_tokens_per_s"] = round(EVAL_BATCH * SEQ_LEN / per_batch)
    res["eval_21M_tokens_s"] = round(EVAL_TOKENS / res["eval_tokens_per_s"], 1)

    # FLOPs as the harness counts them, last: as in the harness, since torch.compile'd frames run
    # eagerly after a call under FlopCounterMode (a TorchDispatchMode).
    t0 = time.monotonic()
    try:
        res["flops_per_token"] = flops_per_token(model, SEQ_LEN, VOCAB, "cuda")
        res["mfu"] = round(100 * res["flops_per_token"] * res["tokens_per_s"] / peak, 2)
    except Exception as e:  # noqa: BLE001
        res["flops_error"] = f"{type(e).__name__}: {e}"
    res["flop_count_s"] = round(time.monotonic() - t0, 2)

    res["case_s"] = round(time.monotonic() - t_start, 1)
    return res


def profile_case() -> None:
    """Where the warm-up and a step go: each first call timed, compile-time breakdown, kernel tables."""
    t0 = time.monotonic()
    import torch
    from torch.profiler import ProfilerActivity, profile

    print(f"import torch: {time.monotonic() - t0:.2f} s", flush=True)
    mod = load_train()
    dev = torch.device("cuda")
    b = mod.GPU_DEVICE_BATCH

    def timed(label, fn):
        torch.cuda.synchronize()
        t = time.monotonic()
        out = fn()
        torch.cuda.synchronize()
        print(f"{label}: {time.monotonic() - t:.2f} s", flush=True)
        return out

    torch.backends.cuda.matmul.allow_tf32 = True
    model = timed(
        "build", lambda: mod.GPT(VOCAB, SEQ_LEN, mod.GPU_DEPTH, mod.GPU_MODEL_DIM, mod.GPU_HEAD_DIM).to(dev)
    )
    for block in model.blocks:
        block.compile(dynamic=False)
    model.head.compile(dynamic=False)
    x = torch.randint(0, VOCAB, (b, SEQ_LEN), device=dev)
    loss = timed("first forward (train graph)", lambda: model(x, x))
    timed("first backward", lambda: loss.backward())
    opts = mod.build_optimizers(model, mod.GPU_MODEL_DIM, dev)
    timed("first optimizer step", lambda: [o.step() for o in opts])
    with torch.no_grad():
        timed("first no-grad forward", lambda: model(x))
    model.eval()
    tb = torch.randint(1, 8, (VOCAB,), device=dev)
    timed("first eval batch (eval mode, harness scoring)", lambda: _run_batch(model, x, x, tb, VOCAB, "cuda"))
    timed("second eval batch", lambda: _run_batch(model, x, x, tb, VOCAB, "cuda"))
    from torch._dynamo.utils import compile_times, counters

    print(compile_times(repr="str"), flush=True)
    print({k: dict(v) for k, v in counters.items() if v}, flush=True)

    model.train()
    for _ in range(2):
        model(x, x).backward()
    step_timing(torch, mod, model, opts, x)
    acts = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
    with profile(activities=acts) as prof:
        for _ in range(4):
            model(x, x).backward()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
    print("== training: 4 micro-batches + 1 optimizer step ==")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
    model.eval()
    with profile(activities=acts) as prof:
        for _ in range(4):
            _run_batch(model, x, x, tb, VOCAB, "cuda")
        torch.cuda.synchronize()
    print("== evaluation: 4 batches ==")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=70))
    timed(
        "flop count [1, T] (last: compiled frames run eagerly after it)",
        lambda: flops_per_token(model, SEQ_LEN, VOCAB, "cuda"),
    )


def step_timing(torch, mod, model, opts, x, steps: int = 20) -> dict:
    """GPU time of the optimizer steps against the forward and backward passes, by CUDA events.

    An optimizer step as train.py takes it: GPU_TOTAL_BATCH tokens of micro-batches, then every
    optimizer's step() and zero_grad. The events time the GPU's work, so the CPU's launch time shows
    only where the GPU waited for it.
    """
    accum = max(1, mod.GPU_TOTAL_BATCH // (x.size(0) * x.size(1)))
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(3 * steps)]
    for i in range(steps):
        ev[3 * i].record()
        for _ in range(accum):
            model(x, x).backward()
        ev[3 * i + 1].record()
        for o in opts:
            o.step()
        model.zero_grad(set_to_none=True)
        ev[3 * i + 2].record()
    torch.cuda.synchronize()
    fb = [ev[3 * i].elapsed_time(ev[3 * i + 1]) for i in range(2, steps)]  # the first two: warm-up
    op = [ev[3 * i + 1].elapsed_time(ev[3 * i + 2]) for i in range(2, steps)]
    out = {
        "micro_batches_per_step": accum,
        "forward_backward_ms": round(sum(fb) / len(fb), 2),
        "optimizer_ms": round(sum(op) / len(op), 2),
    }
    out["optimizer_share_percent"] = round(
        100 * out["optimizer_ms"] / (out["forward_backward_ms"] + out["optimizer_ms"]), 2
    )
    print(f"optimizer step timing (CUDA events, mean of steps 3-{steps}): {json.dumps(out)}", flush=True)
    return out


def check_cases(names: list[str]) -> None:
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"no sweep case named {', '.join(unknown)}; the cases: {', '.join(sorted(CASES))}")


def case_result(p: subprocess.CompletedProcess) -> dict | None:
    """What a case's process printed on its RESULT line, or None when it printed none."""
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[-1][len("RESULT ") :]) if line else None


def compile_cpu(names: list[str]) -> None:
    """Each case in a fresh process: its model (GPU depth, CPU width: 128, sequence 256) compiled per
    region as train.py does, with inductor on the CPU and an empty cache; the first forward and
    backward timed. What changes the number of FX graphs shows here too; the seconds are not a GPU's."""
    if not names:
        raise SystemExit(f"name the sweep cases to compile; the cases: {', '.join(sorted(CASES))}")
    check_cases(names)
    rows = []
    for i, name in enumerate(names, 1):
        print(f"[{i}/{len(names)}] {name} ...", flush=True)
        with tempfile.TemporaryDirectory() as cache:
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, CUDA_VISIBLE_DEVICES="")
            cmd = [sys.executable, __file__, "_compile_cpu", name]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        res = case_result(out)
        if res is None:
            raise SystemExit(f"{name}: failed\n{out.stderr[-3000:]}")
        print(json.dumps(res), flush=True)
        rows.append([res["name"], res["first_forward_backward_s"], res["unique_graphs"]])
    from tabulate import tabulate

    print()
    print(tabulate(rows, headers=["case", "first forward + backward s (CPU)", "unique graphs"]))


def _compile_cpu_case(name: str) -> dict:
    import torch
    from torch._dynamo.utils import counters

    overrides, opts = CASES[name]
    mod = load_case(overrides, opts)
    torch.manual_seed(0)
    model = mod.GPT(4096, 256, mod.GPU_DEPTH, 128, 32)
    if WHOLE_MODEL in opts.get("patch", ()):
        model.compile(dynamic=False)
    else:
        for block in model.blocks:
            block.compile(dynamic=False)
        model.head.compile(dynamic=False)
    x = torch.randint(0, 4096, (4, 256))
    t0 = time.monotonic()
    model(x, x).backward()
    return {
        "name": name,
        "first_forward_backward_s": round(time.monotonic() - t0, 2),
        "unique_graphs": counters["stats"]["unique_graphs"],
        "device": "cpu",
    }


def print_census(results: list[dict]) -> None:
    """A sweep's kernel census as a table: kernels / configurations compiled, by kind."""
    from tabulate import tabulate

    census = [(r["name"], r["kernel_census"]) for r in results if r.get("kernel_census")]
    if not census:
        return
    kinds = sorted({kind for _, c in census for kind in c["by_kind"]})
    rows = []
    for name, c in census:
        cells = [f"{c['by_kind'][k]['kernels']} / {c['by_kind'][k]['configs']}" if k in c["by_kind"] else "-"
                 for k in kinds]  # fmt: skip
        most = ", ".join(f"{m['kernel'][:40]} x{m['configs']}" for m in c["most_configs"][:3])
        rows.append([name, *cells, most])
    print("\nTriton kernels / configurations compiled, by kind (most configurations: kernel xN)")
    print(tabulate(rows, headers=["name", *kinds, "most configurations"]))


def sweep(out_dir: Path, names: list[str] | None, deadline: float | None = None) -> list[dict]:
    """Each case in a fresh process with empty compile caches: all of SWEEP, or `names` in the order
    given (a name twice runs twice: interleave the arms of an A/B, a cold compile varies by seconds).
    With a deadline (seconds from now), no case starts that the longest case so far would not fit."""
    order = names or list(CASES)
    check_cases(order)
    import torch

    env_info = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda}
    env_info["train_sha256"] = hashlib.sha256((REPO / "train.py").read_bytes()).hexdigest()  # before patches
    print(json.dumps(env_info), flush=True)
    results = []
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    t_sweep, longest = time.monotonic(), 60.0
    for i, name in enumerate(order):
        if deadline is not None and time.monotonic() - t_sweep + longest > deadline:
            print(f"deadline: {name} and {len(order) - i - 1} more not started", flush=True)
            break
        print(f"[{i + 1}/{len(order)}] {name} ...", flush=True)
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TRITON_CACHE_DIR": cache + "/triton",
                   "CUDA_CACHE_PATH": cache + "/nv"}  # fmt: skip
            t0, ru0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
            p = subprocess.run(
                [sys.executable, __file__, "_case", name],
                cwd=REPO, env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
        r = case_result(p)
        if p.returncode or r is None:
            r = {"name": name, "error": (p.stderr or p.stdout)[-1500:]}
        r["process_s"] = round(time.monotonic() - t0, 1)
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # the case and its reaped compile workers
        r["process_cpu_s"] = round(ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime, 1)
        longest = max(longest, r["process_s"])
        results.append(r)
        print(json.dumps(r), flush=True)
        out = out_dir / f"sweep-{stamp}.json"  # after every case, so a cut-short sweep keeps its results
        out.write_text(json.dumps({"env": env_info, "date": stamp, "results": results}, indent=1))
    cols = ["name", "tokens_per_s", "mfu", "steps", "warmup_s", "triton_kernels_built", "async_wait_s",
            "params", "peak_mem_mb", "eval_21M_tokens_s", "process_s", "process_cpu_s"]  # fmt: skip
    rows = []
    for r in results:
        r["async_wait_s"] = (r.get("compile_seconds") or {}).get("async_compile.wait")
        rows.append([r.get(c, "-") for c in cols] + [("ERROR " + r["error"][-200:]) if "error" in r else ""])
    from tabulate import tabulate

    print()
    print(tabulate(rows, headers=[*cols, ""]))
    print_census(results)
    return results


# ------------------------------------------------------------------------------------------------


def fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def print_table(rows) -> None:
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{w}}  {v}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    modes = ["run", "sweep", "profile", "compile-cpu", "_case", "_compile_cpu"]
    p.add_argument("mode", choices=modes, nargs="?", default="run")
    p.add_argument("names", nargs="*", help="sweep: only these cases; _case: the case")
    p.add_argument("--out-dir", default=str(RESULTS))
    p.add_argument("--preset", default="gpu")
    p.add_argument("--deadline", type=float, default=None, help="sweep: seconds from now")
    a = p.parse_intermixed_args(argv)  # options before the case names too
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    if a.mode == "_case":
        print("RESULT " + json.dumps(sweep_case(a.names[0], *CASES[a.names[0]])), flush=True)
        return 0
    if a.mode == "_compile_cpu":
        print("RESULT " + json.dumps(_compile_cpu_case(a.names[0])), flush=True)
        return 0
    if a.mode == "compile-cpu":
        compile_cpu(a.names)
        return 0
    if a.mode == "profile":
        profile_case()
        return 0
    if a.mode == "sweep":
        sweep(out_dir, a.names, a.deadline)
        return 0
    m = run_harness(out_dir, a.preset)
    return 0 if m.get("status") == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
