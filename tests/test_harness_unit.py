"""Unit tests of the locked harness's run protocol: no training, no data cache, a few seconds.

The static scan, env scrubbing, the deadline arithmetic, the bpb arithmetic on a hand-made example,
the causality probe on hand-made causal / non-causal / stateful modules, the identity snapshot, the
audit guard's decisions (called directly: a hook installed in the pytest process could never be
removed) and the MFU peak table.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness.channel import Channel, ProtocolError
from harness.integrity import AuditGuard, harness_sha256, scrub_env, static_scan
from harness.mfu import mfu_percent, peak_flops
from harness.scorer import (
    MODEL_ERROR_CHARS,
    MODEL_LINE_CHARS,
    ScoreFailure,
    Tally,
    bounded,
    bpb,
    log_softmax_np,
    make_plan,
)
from harness.supervisor import METRIC_KEYS, blank_metrics
from harness.worker import exc_tail

# -- static scan --------------------------------------------------------------------------------------

CLEAN = """
import math, os, time
import torch
import torch.nn as nn
import torch.nn.functional as F
from harness import TrainingDiverged
torch.backends.cuda.matmul.allow_tf32 = True
torch._inductor.config.coordinate_descent_tuning = True
os.environ["TOKENIZERS_PARALLELISM"] = "false"
class M(nn.Module):
    def forward(self, x):
        self.cache = x
        return x
def train(ctx):
    model = torch.compile(M())
    return model
"""


def test_static_scan_accepts_an_ordinary_train_file():
    assert static_scan(CLEAN) == []


@pytest.mark.parametrize(
    "snippet, words",
    [
        ("import ctypes", "ctypes"),
        ("from ctypes import CDLL", "ctypes"),
        ("import gc", "gc"),
        ("import importlib.util", "importlib"),
        ("import builtins", "builtins"),
        ("import torch.library", "torch.library"),
        ("from torch.overrides import TorchFunctionMode", "torch.overrides"),
        ("from torch.utils._python_dispatch import TorchDispatchMode", "_python_dispatch"),
        ("import harness.evaluate", "harness.evaluate"),
        ("from harness import evaluate", "harness.evaluate"),
        ("from harness.context import Context", "harness.context"),
        ("import sys\nsys.addaudithook(print)", "audit hook"),
        ("import sys\nsys.settrace(None)", "tracing"),
        ("import sys\nsys.setprofile(None)", "profil"),
        ("import sys\nf = sys._getframe(1).f_locals", "frame"),
        ("import torch\ntorch.nn.functional.cross_entropy = print", "monkeypatching"),
        ("import torch.nn.functional as F\nF.log_softmax = print", "monkeypatching"),
        ("import time\ntime.monotonic = lambda: 0.0", "monkeypatching"),
        ("import math\nsetattr(math, 'log', print)", "monkeypatching"),
        ("import torch\ntorch.Tensor.log_softmax = print", "monkeypatching"),
        ("class T:\n    def __torch_function__(self, *a): pass", "torch functions"),
        ("x = __import__('ctypes')", "dynamic imports"),
        ("exec('1')", "generated code"),
        ("import os\nos._exit(0)", "leaving the process"),
        ("import os\nos.setsid()", "process group"),
        ("def f(): pass\nf.__code__ = None", "code objects"),
        ("def train(ctx):\n    return ctx._emit.__closure__", "closures"),
    ],
)
def test_static_scan_rejects_the_tools_of_bending_the_metric(snippet, words):
    problems = static_scan(snippet)
    assert problems, snippet
    assert any(words in p for p in problems), problems


def test_static_scan_reports_syntax_errors_with_a_line():
    (p,) = static_scan("def train(ctx):\n    return (")
    assert p.startswith("line ") and "syntax error" in p


# -- the environment ----------------------------------------------------------------------------------


def test_scrub_env_keeps_the_allowlist_and_drops_secrets():
    env = {
        "PATH": "/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C", "TMPDIR": "/tmp",
        "PYTHONPATH": "/x", "CUDA_VISIBLE_DEVICES": "0", "NVIDIA_VISIBLE_DEVICES": "all",
        "TORCHINDUCTOR_CACHE_DIR": "/c", "TORCH_HOME": "/t", "TRITON_CACHE_DIR": "/tr",
        "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "AUTORESEARCH_CACHE": "/a", "XDG_CACHE_HOME": "/x",
        "GITHUB_TOKEN": "s", "FAKE_GITHUB_TOKEN": "s", "ANTHROPIC_API_KEY": "s", "MODAL_TOKEN_ID": "s",
        "MODAL_TOKEN_SECRET": "s", "AWS_SECRET_ACCESS_KEY": "s", "TORCH_HUB_TOKEN": "s", "CUDA_API_KEY": "s",
        "SSH_AUTH_SOCK": "/s", "GITHUB_REPOSITORY": "o/r", "USER": "root", "PYTHONSTARTUP": "/evil.py",
    }  # fmt: skip
    kept = scrub_env(env)
    assert set(kept) == {
        "PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES", "TORCHINDUCTOR_CACHE_DIR", "TORCH_HOME", "TRITON_CACHE_DIR",
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "AUTORESEARCH_CACHE", "XDG_CACHE_HOME",
    }  # fmt: skip


# -- the scorer's pieces ------------------------------------------------------------------------------


def test_bpb_on_a_hand_made_example():
    assert bpb(3 * 2 * math.log(2), 6) == pytest.approx(1.0)  # 3 targets of 2 bits over 6 bytes
    with pytest.raises(ValueError):
        bpb(1.0, 0)


def test_twins_share_the_prefix_and_continue_with_real_text():
    rng = random.Random(0)
    val = np.arange(10_000, dtype=np.uint16)
    rows = np.stack([val[i * 100 : i * 100 + 17] for i in range(8)])
    plan = make_plan(rows, val, 4096, rng)
    for r in range(8):
        p = plan.cuts[r]
        assert 1 <= p <= 15
        assert (plan.twins[r, :p] == rows[r, :p]).all()
        tail = plan.twins[r, p:]
        assert (np.diff(tail.astype(int)) == 1).all()  # a contiguous stretch of the split
    a, b = plan.work
    assert sorted(a) != sorted(b) and len(a) == len(b) == 8
    for r in range(8):  # each process gets exactly one copy of every row, and the other process the other
        assert {tw for rr, tw in a if rr == r} ^ {tw for rr, tw in b if rr == r} == {True, False}


def _tally(model, plan, tb, V, path="numpy"):
    """Score `model` as the supervisor does: numpy log-probabilities (the CPU path) or torch ones (the
    CUDA path's code, here on the CPU)."""
    tally = Tally(plan, tb, "cpu")
    shape = (max(len(work) for work in plan.work), plan.rows.shape[1] - 1, V)
    scratch = (np.empty(shape, np.float32), np.empty(shape, np.float32))
    for work in plan.work:
        toks = torch.as_tensor(np.stack([(plan.twins[r] if tw else plan.rows[r])[:-1] for r, tw in work]),
                               dtype=torch.long)  # fmt: skip
        with torch.no_grad():
            logits = model(toks).float()
        tally.add(
            log_softmax_np(logits.numpy(), scratch) if path == "numpy" else torch.log_softmax(logits, -1),
            work,
        )
    return tally


def test_the_numpy_log_softmax_gives_the_same_bits_in_scratch_buffers():
    """The supervisor reuses two buffers for every batch: the values are those of fresh arrays, to the
    bit, for a full batch, a shorter last one, and a batch after another filled the buffers."""
    rng = np.random.default_rng(5)
    scratch = (np.full((4, 6, 33), np.nan, np.float32), np.full((4, 6, 33), np.nan, np.float32))
    for n in (4, 2, 4):
        x = (rng.standard_normal((n, 6, 33)) * 20).astype(np.float32)
        want = log_softmax_np(x)
        got = log_softmax_np(x, scratch)
        assert got.shape == want.shape and np.array_equal(got, want)
        assert np.shares_memory(got, scratch[0])  # no fresh array of a batch's size


def test_the_numpy_and_the_torch_scoring_agree():
    """The CPU scores in numpy, CUDA in torch: the same logits give the same sums and probe values."""
    V, T = 257, 24
    g = torch.Generator().manual_seed(3)
    rows = torch.randint(0, V, (10, T + 1), generator=g).numpy()
    val = torch.randint(0, V, (2000,), generator=g).numpy()
    tb = np.random.default_rng(0).integers(0, 4, V)  # some ids of 0 bytes: left out of both sums
    plan = make_plan(rows, val, V, random.Random(4))
    emb = nn.Embedding(V, V)
    with torch.no_grad():
        emb.weight.mul_(30)  # large logits: the max-shift must hold in both
    causal = lambda x: emb(x).cumsum(1)  # noqa: E731
    a, b = _tally(causal, plan, tb, V, "numpy"), _tally(causal, plan, tb, V, "torch")
    assert (a.bytes, a.scored, a.compared) == (b.bytes, b.scored, b.compared)
    assert a.nats == pytest.approx(b.nats, rel=1e-6) and a.nats > 0
    x = emb(torch.as_tensor(rows[:, :-1])).detach()
    assert np.abs(log_softmax_np(x.numpy()) - torch.log_softmax(x, -1).numpy()).max() < 1e-4


def test_non_finite_logits_are_flagged_by_the_numpy_scoring():
    V, T = 11, 16
    rows = torch.randint(0, V, (4, T + 1)).numpy()
    plan = make_plan(rows, torch.randint(0, V, (500,)).numpy(), V, random.Random(5))
    emb = nn.Embedding(V, V)

    def broken(x):
        out = emb(x).cumsum(1)
        out[0, 3, 0] = float("nan")
        return out

    assert _tally(broken, plan, np.ones(V, dtype=np.int64), V).nonfinite


def test_tally_passes_a_causal_model_exactly_and_sums_only_originals():
    V, T = 11, 16
    torch.manual_seed(0)
    rows = torch.randint(0, V, (6, T + 1)).numpy()
    val = torch.randint(0, V, (500,)).numpy()
    tb = np.ones(V, dtype=np.int64)
    plan = make_plan(rows, val, V, random.Random(1))
    emb = nn.Sequential(nn.Embedding(V, 8), nn.Linear(8, V))
    tally = _tally(lambda x: emb(x).cumsum(1), plan, tb, V)  # causal: a running sum
    assert tally.compared == 6 and tally.max_diff == 0.0
    assert tally.bytes == 6 * T and tally.scored == 6 * T


def test_tally_rejects_a_model_that_peeks_one_token_ahead():
    V, T = 11, 16
    rows = torch.randint(0, V, (6, T + 1)).numpy()
    val = torch.randint(0, V, (500,)).numpy()
    plan = make_plan(rows, val, V, random.Random(2))
    emb = nn.Embedding(V, V)

    def peek(x):
        out = emb(x)
        return torch.cat([out[:, :-1] + 5 * F.one_hot(x[:, 1:], V), out[:, -1:]], 1)

    for path in ("numpy", "torch"):
        with pytest.raises(ScoreFailure, match="not causal"):
            _tally(peek, plan, np.ones(V, dtype=np.int64), V, path)


def test_the_channel_rejects_oversized_and_malformed_frames():
    import socket
    import struct

    a, b = socket.socketpair()
    ch = Channel(a, max_payload=16)
    b.sendall(struct.pack("<II", 2, 100) + b"{}")
    with pytest.raises(ProtocolError):
        ch.recv(timeout=1)
    a2, b2 = socket.socketpair()
    ch2 = Channel(a2)
    b2.sendall(struct.pack("<II", 3, 0) + b"abc")
    with pytest.raises(ProtocolError):
        ch2.recv(timeout=1)


def test_hard_deadline_covers_the_wall_deadline_of_the_cpu_clock():
    from harness.presets import get_preset
    from harness.protocol import HARNESS_OVERHEAD_S, hard_deadline_seconds, training_wall_deadline_seconds

    for name in ("tiny", "cpu", "gpu"):
        p = get_preset(name)
        assert hard_deadline_seconds(name) == pytest.approx(
            p.startup_allowance_seconds + training_wall_deadline_seconds(p) + p.eval_timeout_seconds
            + HARNESS_OVERHEAD_S)  # fmt: skip
    assert training_wall_deadline_seconds(get_preset("cpu")) > get_preset("cpu").budget_seconds * 2


def test_a_model_processs_error_keeps_its_first_line_and_end_within_the_cap():
    short = "crash: build_model(ctx) raised\nTraceback\nValueError: no"
    assert bounded(short) == short
    one_line = bounded("x" * 50_000)
    assert len(one_line) == MODEL_LINE_CHARS and one_line.endswith("...")
    frames = [f'  File "train.py", line {i}, in f' for i in range(2_000)]
    text = (
        "crash: the model raised during evaluation\n" + "\n".join(frames) + "\nRuntimeError: " + "7 " * 9_000
    )
    cut = bounded(text)
    assert len(cut) <= MODEL_ERROR_CHARS
    first, *_, last = cut.splitlines()
    assert first == "crash: the model raised during evaluation" and last.startswith("RuntimeError: 7 7")
    assert "line 1999, in f" in cut and "line 0, in f" not in cut


def test_a_traceback_with_a_huge_message_keeps_the_exceptions_type_and_start():
    try:
        raise RuntimeError("kaboom " + "1 " * 100_000)
    except RuntimeError as e:
        text = exc_tail(e)
    assert len(text) < 5_000 and "RuntimeError: kaboom 1 1" in text


def test_blank_metrics_has_every_contract_key():
    m = blank_metrics("tiny", 3)
    assert set(METRIC_KEYS) <= set(m) and m["preset"] == "tiny" and m["seed"] == 3
    for k in ("status", "val_bpb", "training_seconds", "total_seconds", "peak_memory_mb", "mfu_percent",
              "num_steps", "num_params", "harness_sha256", "train_sha256", "error", "isolation", "clock",
              "training_cpu_seconds", "training_wall_seconds"):  # fmt: skip
        assert k in METRIC_KEYS


def test_bwrap_view_makes_every_parent_traversable():
    from harness.sandbox import View

    v = View()
    v.ro("/root/.pyenv/versions/3.11.7")
    v.ro("/usr")
    dirs = [v.args[i + 3] for i, a in enumerate(v.args) if a == "--perms"]
    assert dirs == ["/root", "/root/.pyenv", "/root/.pyenv/versions"]
    assert v.args[v.args.index("--perms") + 1] == "0755"


# -- the audit guard ----------------------------------------------------------------------------------


@pytest.fixture()
def guard(tmp_path):
    val = tmp_path / "cache" / "val.bin"
    val.parent.mkdir()
    val.write_bytes(b"\0" * 16)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "speech.txt").write_text("Fellow citizens")
    harness_dir = tmp_path / "harness"
    harness_dir.mkdir()
    (harness_dir / "evaluate.py").write_text("")
    g = AuditGuard([val, corpus], [harness_dir, val.parent], private_fds=[99])
    g._installed = True
    return g, tmp_path


def test_a_violation_reaches_on_violation_before_the_candidate_can_catch_it(guard):
    """The worker ends the run in on_violation (harness/worker.py): it must be called with the
    violation, already recorded, before the PermissionError the candidate could swallow."""
    g, root = guard
    seen = []
    g.on_violation = lambda msg: seen.append((msg, list(g.violations)))
    with pytest.raises(PermissionError):
        g._hook("open", (str(root / "harness" / "evaluate.py"), "a", 0))
    (msg, recorded) = seen[0]
    assert "for writing" in msg and recorded == [msg]
    g._hook("open", (str(root / "elsewhere.txt"), "r", 0))  # no violation, no call
    assert len(seen) == 1


def test_the_worker_holds_the_gc_for_its_imports_and_freezes_what_they_made():
    import gc

    from harness.worker import hold_gc, release_gc

    was = gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        hold_gc()
        assert not gc.isenabled()
        junk = [[object()] for _ in range(1000)]
        release_gc()
        assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(junk)
    finally:
        gc.unfreeze()
        gc.enable() if was else gc.disable()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the failure path needs a machine without CUDA")
def test_cuda_warm_ups_without_cuda_report_instead_of_raising():
    """The worker's CUDA thread hands its failure to the main thread (an infra error there); the
    scorer's warm-up swallows it (the scoring's own set-up reports it)."""
    from harness.scorer import DeviceWarmup
    from harness.worker import CudaWarmup

    w = CudaWarmup(torch, "cuda:0")
    w.join(timeout=60)
    assert not w.is_alive() and w.error and w.seconds >= 0
    d = DeviceWarmup("cuda:0")
    d.join(timeout=60)
    assert not d.is_alive() and d.seconds is None


def test_guard_blocks_reading_validation_data_outside_the_window(guard):
    g, root = guard
    with pytest.raises(PermissionError):
        g._hook("open", (str(root / "cache" / "val.bin"), "rb", 0))
    with pytest.raises(PermissionError):
        g._hook("open", (str(root / "corpus" / "speech.txt"), "r", 0))
    with g.reading_val():
        g._hook("open", (str(root / "cache" / "val.bin"), "rb", 0))  # the harness's own read
    assert len(g.violations) == 2
    g._hook("open", (str(root / "elsewhere.txt"), "r", 0))
    assert len(g.violations) == 2


def test_guard_follows_symlinks_and_hard_links_to_validation_data(guard):
    g, root = guard
    link = root / "innocent.bin"
    link.symlink_to(root / "cache" / "val.bin")
    with pytest.raises(PermissionError):
        g._hook("open", (str(link), "rb", 0))
    hard = root / "hard.bin"
    hard.hardlink_to(root / "cache" / "val.bin")
    with pytest.raises(PermissionError):
        g._hook("open", (str(hard), "rb", 0))


def test_guard_blocks_writes_into_the_harness_and_the_cache(guard):
    g, root = guard
    with pytest.raises(PermissionError, match="read-only"):
        g._hook("open", (str(root / "harness" / "evaluate.py"), "a", 0))
    with pytest.raises(PermissionError, match="read-only"):
        g._hook("os.rename", (str(root / "x"), str(root / "harness" / "__pycache__" / "evil.pyc"), -1, -1))
    g._hook("open", (str(root / "harness" / "evaluate.py"), "r", 0))  # reading the harness is fine


def test_guard_blocks_subprocesses_naming_protected_paths_and_gc_walks(guard):
    g, root = guard
    with pytest.raises(PermissionError):
        g._hook("subprocess.Popen", ("cat", ["cat", str(root / "cache" / "val.bin")], None, None))
    g._hook("subprocess.Popen", ("nvidia-smi", ["nvidia-smi"], None, None))
    with pytest.raises(PermissionError):
        g._hook("gc.get_referrers", ((),))
    with pytest.raises(PermissionError):
        g._hook("open", (99, "w", 0))  # wrapping the private event fd
    with pytest.raises(PermissionError, match="process memory"):
        g._hook("open", ("/proc/self/mem", "rb", 0))


def test_guard_blocks_patching_torch_tensor(guard):
    g, _ = guard
    with pytest.raises(PermissionError, match="Tensor.log_softmax"):
        g._hook("object.__setattr__", (torch.Tensor, "log_softmax", None))
    g._hook("object.__setattr__", (nn.Linear, "anything", None))


# -- hashes and MFU -----------------------------------------------------------------------------------


def test_harness_hash_covers_every_file(tmp_path):
    (tmp_path / "a.py").write_text("A = 1\n")
    (tmp_path / "presets.py").write_text("BUDGET = 300\n")
    h = harness_sha256(tmp_path)
    (tmp_path / "presets.py").write_text("BUDGET = 301\n")
    assert harness_sha256(tmp_path) != h


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.5e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989.5e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA L40S", 362.05e12),
        ("NVIDIA A10G", 125e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA L4", 121e12),
    ],
)
def test_peak_flops_by_gpu_name(name, peak):
    got, source = peak_flops(name)
    assert got == peak and "datasheet" in source and "dense" in source


def test_no_mfu_on_cpu_or_unknown_gpus():
    assert peak_flops("cpu")[0] is None and "CPU" in peak_flops("cpu")[1]
    got, why = peak_flops("Tesla T4")
    assert got is None and "T4" in why
    assert mfu_percent(1e9, 1000, 0.0, 1e12) is None
    assert mfu_percent(6e6, 1_000_000, 10.0, 1e12) == pytest.approx(60.0)


def test_guard_refuses_an_audit_hook_from_the_candidate_but_not_from_a_library(tmp_path):
    cand = tmp_path / "train.py"
    cand.write_text("def add(g):\n    g._hook('sys.addaudithook', ())\n")
    g = AuditGuard([], [], candidate_files=[cand])
    g._installed = True
    g._hook("sys.addaudithook", ())  # from this test file: a library, as far as the guard knows
    assert g.violations == [] and g.foreign_hooks == [str(Path(__file__).resolve())]
    ns: dict = {}
    exec(compile(cand.read_text(), str(cand), "exec"), ns)
    with pytest.raises(RuntimeError):
        ns["add"](g)
    assert g.violations == ["tried to add an audit hook"]


# -- the compile cache --------------------------------------------------------------------------------


def test_compile_cache_is_partitioned_by_train_sha_and_copies_no_links(tmp_path, monkeypatch):
    from harness import compile_cache

    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    run1 = tmp_path / "run1"
    (run1 / ".cache" / "inductor").mkdir(parents=True)
    (run1 / ".cache" / "inductor" / "kernel.py").write_text("k")
    (run1 / ".cache" / "evil").symlink_to("/etc/passwd")
    assert compile_cache.keep(run1, "a" * 64) == 1
    part = compile_cache.partition("a" * 64)
    assert (part / "inductor" / "kernel.py").read_text() == "k" and not (part / "evil").exists()
    fresh = tmp_path / "run2"
    fresh.mkdir()
    assert compile_cache.seed(fresh, "b" * 64, None) == 0  # another train.py sees nothing
    assert not (fresh / ".cache").exists()
    assert compile_cache.seed(fresh, "a" * 64, None) == 1
    assert (fresh / ".cache" / "inductor" / "kernel.py").read_text() == "k"


def test_the_seed_is_moved_in_whole_and_never_written_through_the_sandbox_s_paths(tmp_path, monkeypatch):
    """The seed runs while the worker already starts, so it is copied beside the scratch directory
    and renamed into it: a .cache that the sandbox made first, even a link to elsewhere, gets
    nothing written into or through it (a cold start), and no staging copy is left behind."""
    from harness import compile_cache

    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    run1 = tmp_path / "run1"
    (run1 / ".cache" / "triton").mkdir(parents=True)
    (run1 / ".cache" / "triton" / "kernel.cubin").write_bytes(b"1234")
    assert compile_cache.keep(run1, "a" * 64) == 4
    run_dir = tmp_path / "run"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked = run_dir / "linked"
    linked.mkdir(parents=True)
    (linked / ".cache").symlink_to(elsewhere)  # what a sandboxed process could have made there
    assert compile_cache.seed(linked, "a" * 64, None) == 0
    assert list(elsewhere.iterdir()) == []
    taken = run_dir / "taken"
    (taken / ".cache" / "triton").mkdir(parents=True)
    (taken / ".cache" / "triton" / "mine").write_text("x")
    assert compile_cache.seed(taken, "a" * 64, None) == 0
    assert [p.name for p in (taken / ".cache" / "triton").iterdir()] == ["mine"]
    fresh = run_dir / "fresh"
    fresh.mkdir()
    assert compile_cache.seed(fresh, "a" * 64, None) == 4
    assert (fresh / ".cache" / "triton" / "kernel.cubin").read_bytes() == b"1234"
    assert sorted(p.name for p in run_dir.iterdir()) == ["fresh", "linked", "taken"]  # no staging left


def test_a_seed_over_the_limit_is_a_cold_start_and_a_seed_is_given_to_its_owner(tmp_path, monkeypatch):
    """A partition past MAX_BYTES seeds nothing (and leaves no half copy beside the scratch); a seed
    is chowned to the sandboxed uid whole, the .cache directory included. The owner here is this
    process's own uid, which a test without root may still chown to."""
    from harness import compile_cache

    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    run1 = tmp_path / "run1"
    (run1 / ".cache" / "inductor" / "fx").mkdir(parents=True)
    (run1 / ".cache" / "inductor" / "fx" / "graph.py").write_text("123456")
    assert compile_cache.keep(run1, "d" * 64) == 6
    run_dir = tmp_path / "run"
    big = run_dir / "big"
    big.mkdir(parents=True)
    monkeypatch.setattr(compile_cache, "MAX_BYTES", 5)
    assert compile_cache.seed(big, "d" * 64, None) == 0
    assert sorted(p.name for p in run_dir.iterdir()) == ["big"] and not (big / ".cache").exists()
    monkeypatch.setattr(compile_cache, "MAX_BYTES", 6)
    owner = (os.getuid(), os.getgid())
    assert compile_cache.seed(big, "d" * 64, owner) == 6
    assert all(p.stat().st_uid == owner[0] for p in [big / ".cache", *(big / ".cache").rglob("*")])


def test_an_unusable_compile_cache_is_a_cold_start_never_a_failed_run(tmp_path, monkeypatch):
    """AUTORESEARCH_COMPILE_CACHE places the partitions; where they cannot be written (a file in the
    way), keeping gives 0 bytes and seeding finds nothing, without an exception."""
    from harness import compile_cache

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("AUTORESEARCH_COMPILE_CACHE", str(blocker / "compile"))
    assert compile_cache.partition("e" * 64) == blocker / "compile" / compile_cache.LAYOUT / ("e" * 64)
    run1 = tmp_path / "run1"
    (run1 / ".cache" / "triton").mkdir(parents=True)
    (run1 / ".cache" / "triton" / "k.cubin").write_bytes(b"12")
    assert compile_cache.keep(run1, "e" * 64) == 0
    fresh = tmp_path / "run" / "fresh"
    fresh.mkdir(parents=True)
    assert compile_cache.seed(fresh, "e" * 64, None) == 0 and not (fresh / ".cache").exists()


def _cache_tree(scratch: Path) -> Path:
    c = scratch / ".cache"
    (c / "inductor" / "fx").mkdir(parents=True)
    (c / "inductor" / "fx" / "graph.py").write_text("graph")
    (c / "triton").mkdir()
    (c / "triton" / "kernel.cubin").write_bytes(b"1234")
    return c


def test_the_cache_is_kept_as_it_was_when_the_clock_started(tmp_path, monkeypatch):
    """What the training writes, rewrites or deletes in its cache after the snapshot (taken before the
    clock starts) never reaches the partition: the next run gets exactly the snapshot."""
    from harness import compile_cache

    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    scratch = tmp_path / "run" / "train"
    c = _cache_tree(scratch)
    snap = compile_cache.snapshot(scratch)
    assert snap.nbytes == 9 and snap.path is not None and snap.path.parent == scratch.parent
    (c / "learnt.bin").write_bytes(b"weights")  # after the clock started
    (c / "triton" / "kernel.cubin").write_bytes(b"rewritten")
    (c / "inductor" / "fx" / "graph.py").unlink()
    assert compile_cache.keep(scratch, "f" * 64, snap) == 9
    part = compile_cache.partition("f" * 64)
    got = sorted(str(q.relative_to(part)) for q in part.rglob("*") if q.is_file())
    assert got == ["inductor/fx/graph.py", "triton/kernel.cubin"]
    assert (part / "triton" / "kernel.cubin").read_bytes() == b"1234"
    # A run whose clock started with no cache keeps nothing: the partition stays as it was.
    assert compile_cache.keep(scratch, "f" * 64, compile_cache.Snapshot(None, 0)) == 0
    assert (part / "inductor" / "fx" / "graph.py").read_text() == "graph"
    # A run whose clock never started saw no batch: what it left is kept.
    assert compile_cache.keep(scratch, "f" * 64, None) == len(b"weights") + len(b"rewritten")


def test_a_snapshot_on_another_filesystem_is_copied_into_the_partition(tmp_path, monkeypatch):
    """The snapshot is moved into the partition where it can be; across filesystems (EXDEV) it is
    copied, with the same result."""
    import errno

    from harness import compile_cache

    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    scratch = tmp_path / "run" / "train"
    _cache_tree(scratch)
    snap = compile_cache.snapshot(scratch)

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(compile_cache.os, "rename", cross_device)
    assert compile_cache.keep(scratch, "9" * 64, snap) == 9
    part = compile_cache.partition("9" * 64)
    assert (part / "triton" / "kernel.cubin").read_bytes() == b"1234" and snap.path.is_dir()


def test_the_snapshot_reads_nothing_through_links_and_never_blocks_on_a_fifo(tmp_path):
    """The snapshot reads a tree the live sandbox controls: links (to files, to directories, or the
    .cache directory itself) are not followed, a FIFO is skipped without waiting for a writer."""
    from harness import compile_cache

    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("SECRET")
    scratch = tmp_path / "run" / "train"
    c = _cache_tree(scratch)
    (c / "file-link").symlink_to(secret / "key")
    (c / "dir-link").symlink_to(secret)
    os.mkfifo(c / "triton" / "pipe")
    snap = compile_cache.snapshot(scratch)
    assert snap.nbytes == 9
    copied = {str(q.relative_to(snap.path)) for q in snap.path.rglob("*")}
    assert copied == {"inductor", "inductor/fx", "inductor/fx/graph.py", "triton", "triton/kernel.cubin"}
    linked = tmp_path / "run" / "linked"
    linked.mkdir()
    (linked / ".cache").symlink_to(secret)
    assert compile_cache.snapshot(linked) == compile_cache.Snapshot(None, 0)
    assert compile_cache.snapshot(tmp_path / "run" / "none-here") == compile_cache.Snapshot(None, 0)


def test_a_snapshot_past_its_limits_keeps_nothing_and_leaves_no_copy(tmp_path, monkeypatch):
    from harness import compile_cache

    scratch = tmp_path / "run" / "train"
    _cache_tree(scratch)
    monkeypatch.setattr(compile_cache, "MAX_BYTES", 8)
    assert compile_cache.snapshot(scratch) == compile_cache.Snapshot(None, 0)
    monkeypatch.setattr(compile_cache, "MAX_BYTES", 9)
    monkeypatch.setattr(compile_cache, "MAX_FILES", 1)
    assert compile_cache.snapshot(scratch) == compile_cache.Snapshot(None, 0)
    assert sorted(q.name for q in (tmp_path / "run").iterdir()) == ["train"]


def test_the_clock_starts_after_its_hook_and_calls_it_once():
    """The snapshot is the harness's time: the clock's start is taken when the hook returns."""
    import time

    from harness.presets import get_preset
    from harness.supervisor import Clock

    class Counter:
        def read(self):
            return 0.0

    calls = []

    def hook():
        calls.append(time.monotonic())
        time.sleep(0.05)

    clock = Clock(get_preset("tiny"), Counter(), time.monotonic(), before_start=hook)
    asked = time.monotonic()
    clock.start(asked)
    assert len(calls) == 1 and clock.wall0 >= asked + 0.05
    clock.start(time.monotonic())
    assert len(calls) == 1


def test_the_training_cache_is_kept_beside_the_scoring(tmp_path, monkeypatch):
    """The supervisor keeps the training sandbox's compile cache in a thread while the scoring runs
    (finish() joins it): the partition gets it, the metrics say how much, the scratch goes."""
    import threading

    from harness import compile_cache
    from harness.supervisor import keep_compile_cache

    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "cache"))
    scratch = tmp_path / "train"
    (scratch / ".cache" / "triton").mkdir(parents=True)
    (scratch / ".cache" / "triton" / "kernel.cubin").write_bytes(b"12345")
    metrics = {"train_sha256": "c" * 64}
    job = threading.Thread(target=keep_compile_cache, args=(scratch, metrics), daemon=True)
    job.start()
    job.join(timeout=30)
    assert not job.is_alive() and metrics["compile_cache_kept_bytes"] == 5
    assert (compile_cache.partition("c" * 64) / "triton" / "kernel.cubin").read_bytes() == b"12345"
    assert not scratch.exists()


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(32, 8)

    def forward(self, x):
        return self.emb(x).cumsum(1) @ self.emb.weight.T


def _scoring_forward(x, m):
    with torch.no_grad():
        return m(x)


def test_the_compiled_scoring_forward_is_one_graph_for_every_batch_and_pads_like_eager(capsys):
    from harness.modelproc import compile_forward

    torch._dynamo.reset()
    model = _Tiny().eval()
    try:
        compiled, seconds = compile_forward(torch, model, _scoring_forward, 8, 5, 32, "cpu", backend="eager")
        assert compiled is not None and seconds > 0
        assert "scoring forward compiled" in capsys.readouterr().out
        x = torch.randint(0, 32, (3, 5))
        padded = torch.cat([x, x[-1:].expand(5, 5)])  # as the model process pads a last batch of 3
        assert torch.equal(_scoring_forward(padded, compiled)[:3], _scoring_forward(x, model))
        from torch._dynamo.utils import counters

        assert counters["stats"]["unique_graphs"] == 1  # the 2-row warm-up's graph served 8 rows
    finally:
        torch.compiler.set_stance("default")
        torch._dynamo.reset()


def test_the_scoring_compile_asks_inductor_for_kernels_chosen_by_rule(monkeypatch):
    """Both model processes must compile the same kernels: inductor's deterministic mode (no
    reduction configuration picked by timing it on a busy GPU) is on when the inductor compile is
    asked for, and left alone for any other backend. (torch.compile is recorded, not run: inductor
    on this CPU would need a C++ toolchain.)"""
    import torch._inductor.config as inductor_config

    from harness.modelproc import compile_forward

    seen = {}

    def recording_compile(model, backend):
        seen[backend] = inductor_config.deterministic
        return model

    monkeypatch.setattr(inductor_config, "deterministic", False)
    monkeypatch.setattr(torch, "compile", recording_compile)
    try:
        for backend in ("eager", "inductor"):
            model = _Tiny().eval()
            compiled, _ = compile_forward(torch, model, _scoring_forward, 8, 5, 32, "cpu", backend=backend)
            assert compiled is not None
        assert seen == {"eager": False, "inductor": True}
    finally:
        torch.compiler.set_stance("default")
        torch._dynamo.reset()


def test_same_kernels_is_a_no_op_where_torch_has_no_deterministic_mode(monkeypatch):
    import torch._inductor.config as inductor_config

    from harness.modelproc import same_kernels_in_both

    monkeypatch.delattr(inductor_config, "deterministic")
    assert same_kernels_in_both() is False


def test_a_forward_that_cannot_be_compiled_is_scored_eager(capsys):
    from harness.modelproc import compile_forward

    def broken_backend(gm, example_inputs):
        raise RuntimeError("this compiler cannot compile that")

    torch._dynamo.reset()
    try:
        compiled, _ = compile_forward(
            torch, _Tiny().eval(), _scoring_forward, 8, 5, 32, "cpu", broken_backend
        )
        assert compiled is None
        assert "not compiled (BackendCompilerFailed" in capsys.readouterr().out
    finally:
        torch.compiler.set_stance("default")
        torch._dynamo.reset()


def test_the_log_is_never_the_file_stdout_goes_to(tmp_path):
    """`python -m harness run ... --out m.json > m.log`: m.log is where the echo of the log goes, so
    the log itself moves to m.run.log (else the echo reads back its own lines, without end)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from harness.supervisor import own_log; "
        "print(own_log(Path(sys.argv[1])))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    target = tmp_path / "m.log"
    with open(target, "w") as f:
        subprocess.run([sys.executable, "-c", code, str(target)], stdout=f, env=env, check=True)
    assert target.read_text().strip() == str(tmp_path / "m.run.log")
    other = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, env=env)
    assert other.stdout.strip() == str(target)  # any other stdout: the log stays where it was asked
