"""Unit tests of the locked harness's run protocol: no training, no data cache, a few seconds.

The static scan, env scrubbing, the deadline arithmetic, the bpb arithmetic on a hand-made example,
the causality probe on hand-made causal / non-causal / stateful modules, the identity snapshot, the
audit guard's decisions (called directly: a hook installed in the pytest process could never be
removed) and the MFU peak table.
"""

from __future__ import annotations

import math
import random
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from harness import evaluate as ev
from harness.integrity import AuditGuard, Snapshot, harness_sha256, scrub_env, static_scan
from harness.mfu import mfu_percent, peak_flops
from harness.supervisor import METRIC_KEYS, Deadlines, blank_metrics

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


# -- deadlines ----------------------------------------------------------------------------------------


def deadlines(**kw) -> Deadlines:
    return Deadlines(spawn=100.0, allowance=20.0, budget=30.0, grace=5.0, eval_timeout=60.0, **kw)


def test_deadline_before_any_event_is_allowance_plus_budget_plus_grace():
    d = deadlines()
    assert d.next_deadline() == (155.0, "training")
    assert d.clock_start(110.0) is None and d.clock_start(120.0) == 120.0


def test_clock_started_early_moves_the_training_deadline_forward():
    d = deadlines(clock_event=104.0)
    assert d.next_deadline() == (139.0, "training")
    d.train_done = 134.5
    assert d.training_seconds(200.0) == pytest.approx(30.5)
    assert d.next_deadline() == (194.5, "evaluation")


def test_a_late_clock_started_does_not_buy_time():
    d = deadlines(clock_event=126.0)  # after the allowance ran out at 120
    assert d.clock_start(130.0) == 120.0
    assert d.next_deadline() == (155.0, "training")
    d.train_done = 150.0
    assert d.training_seconds(150.0) == pytest.approx(30.0)


def test_training_that_ends_before_the_clock_starts_took_zero_seconds():
    d = deadlines(train_done=110.0)
    assert d.training_seconds(110.0) == 0.0


def test_timeout_messages_name_the_deadline():
    assert "budget of 30 s plus 5 s grace" in deadlines().describe("training")
    assert "start-up allowance" in deadlines().describe("training")
    assert "evaluation did not finish within 60 s" in deadlines().describe("evaluation")


def test_blank_metrics_has_every_contract_key():
    m = blank_metrics("tiny", 3)
    assert set(METRIC_KEYS) <= set(m) and m["preset"] == "tiny" and m["seed"] == 3
    for k in ("status", "val_bpb", "training_seconds", "total_seconds", "peak_memory_mb", "mfu_percent",
              "num_steps", "num_params", "harness_sha256", "train_sha256", "error"):  # fmt: skip
        assert k in METRIC_KEYS


# -- bpb arithmetic -----------------------------------------------------------------------------------


def test_bpb_on_a_hand_made_example():
    # vocabulary of 4: id 0 is BOS (0 bytes), ids 1, 2, 3 are 1, 2 and 3 bytes long.
    token_bytes = torch.tensor([0, 1, 2, 3])
    y = torch.tensor([[1, 2, 0, 3]])
    logits = torch.zeros(1, 4, 4)  # uniform: every target costs ln 4 nats
    nats, nbytes, scored = ev.score_logits(logits, y, token_bytes, 4)
    assert nats.item() == pytest.approx(3 * math.log(4))  # the BOS target is not scored
    assert nbytes.item() == 6 and scored.item() == 3
    assert ev.bpb(nats.item(), nbytes.item()) == pytest.approx(1.0)  # 3 * 2 bits / 6 bytes

    # a confident right answer at the 3-byte target: it costs ~0, the rest ln 4 each
    logits[0, 3, 3] = 50.0
    nats, nbytes, _ = ev.score_logits(logits, y, token_bytes, 4)
    assert ev.bpb(nats.item(), nbytes.item()) == pytest.approx(2 * 2 / 6, abs=1e-6)


def test_score_logits_ignores_padded_vocabulary_columns_and_checks_the_shape():
    y = torch.tensor([[1, 2]])
    tb = torch.tensor([0, 1, 1])
    padded = torch.cat([torch.zeros(1, 2, 3), torch.full((1, 2, 5), -1e9)], dim=2)
    nats, _, _ = ev.score_logits(padded, y, tb, 3)
    assert nats.item() == pytest.approx(2 * math.log(3))
    with pytest.raises(ev.InvalidModel, match="shape"):
        ev.score_logits(torch.zeros(1, 2, 2), y, tb, 3)


# -- the causality probe ------------------------------------------------------------------------------

V, T, B = 11, 16, 4


class PrefixMean(nn.Module):
    """Causal: the logits at t come from the mean embedding of tokens 0..t."""

    def __init__(self, causal=True):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.out, self.causal = nn.Embedding(V, 8), nn.Linear(8, V), causal

    def forward(self, idx):
        e = self.emb(idx)
        if self.causal:
            h = e.cumsum(1) / torch.arange(1, idx.shape[1] + 1).view(1, -1, 1)
        else:
            h = e.mean(1, keepdim=True).expand_as(e)
        return self.out(h)


class Stateful(PrefixMean):
    """Causal, but its output drifts with every call: test-time state."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, idx):
        self.calls += 1
        return super().forward(idx) + 0.01 * self.calls


class Peeks(PrefixMean):
    """Causal everywhere except position 0, which also sees the row's last token."""

    def forward(self, idx):
        out = super().forward(idx)
        out[:, 0] += idx[:, -1:].float()  # position 0 depends on the last token
        return out


def probe(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    row = torch.randint(0, V, (B, T + 1), generator=g)
    x, y = row[:, :-1], row[:, 1:]
    model.eval()
    logits0 = ev._run_batch(model, x, y, torch.ones(V, dtype=torch.long), V, "cpu")[0].clone()
    return ev.probe_batch(
        model, x, y, logits0, torch.ones(V, dtype=torch.long), V, "cpu", random.Random(seed)
    )


def test_probe_passes_a_causal_model_exactly():
    out = probe(PrefixMean())
    assert out["probe_diff"] == 0.0 and out["rerun_diff"] == 0.0


def test_probe_passes_causal_sdpa_attention():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb, self.qkv, self.out = nn.Embedding(V, 16), nn.Linear(16, 48), nn.Linear(16, V)

        def forward(self, idx):
            q, k, v = self.qkv(self.emb(idx)).unsqueeze(1).chunk(3, dim=-1)
            return self.out(F.scaled_dot_product_attention(q, k, v, is_causal=True).squeeze(1))

    assert probe(Attn())["probe_diff"] <= 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_probe_rejects_a_non_causal_model(seed):
    with pytest.raises(ev.InvalidModel, match="depends on later tokens"):
        probe(PrefixMean(causal=False), seed)


def test_probe_rejects_a_model_that_reads_the_last_token_at_position_zero():
    with pytest.raises(ev.InvalidModel, match="output at position 0 depends on later tokens"):
        probe(Peeks())


def test_probe_rejects_a_model_that_changes_between_identical_passes():
    with pytest.raises(ev.InvalidModel, match="between two identical evaluation passes"):
        probe(Stateful())


def test_forward_must_return_a_plain_tensor():
    class Sub(torch.Tensor):
        pass

    class M(nn.Module):
        def forward(self, idx):
            return torch.zeros(*idx.shape, V).as_subclass(Sub)

    with pytest.raises(ev.InvalidModel, match="plain torch.Tensor"):
        ev._forward(M(), torch.zeros(1, 3, dtype=torch.long), "cpu")


def test_a_model_that_raises_is_a_crash_not_a_harness_error():
    class M(nn.Module):
        def forward(self, idx):
            raise RuntimeError("CUDA out of memory (pretend)")

    with pytest.raises(ev.ModelCrash, match="out of memory"):
        ev._forward(M(), torch.zeros(1, 3, dtype=torch.long), "cpu")


def test_fingerprint_sees_a_changed_parameter_or_buffer():
    m = PrefixMean()
    m.register_buffer("b", torch.zeros(3))
    fp = ev.fingerprint(m)
    assert ev.fingerprint(m) == fp
    with torch.no_grad():
        m.b[1] = 1e-30
    assert ev.fingerprint(m) != fp


def test_unwrap_finds_the_module_behind_a_compile_wrapper():
    inner = PrefixMean()

    class Wrapper(nn.Module):
        def __init__(self, m):
            super().__init__()
            self._orig_mod = m

    assert ev.unwrap(Wrapper(inner)) is inner
    assert ev.unwrap(inner) is inner


# -- the snapshot and the audit guard ----------------------------------------------------------------


def test_snapshot_reports_a_replaced_function_even_after_the_evaluator_captured_it():
    snap = Snapshot()
    assert snap.changes() == []
    saved = F.log_softmax
    try:
        F.log_softmax = lambda *a, **k: None
        assert "torch.nn.functional.log_softmax was replaced" in snap.changes()
        assert ev._log_softmax is torch.log_softmax  # the captured reference is untouched
    finally:
        F.log_softmax = saved
    assert snap.changes() == []


def test_snapshot_reports_a_patched_harness_function_and_code_object():
    snap = Snapshot()
    saved = ev.bpb.__code__
    try:
        ev.bpb.__code__ = (lambda nats, nbytes: 0.0).__code__
        assert "harness.evaluate.bpb.__code__ was replaced" in snap.changes()
    finally:
        ev.bpb.__code__ = saved


def test_snapshot_reports_a_torch_library_override():
    snap = Snapshot()
    lib = torch.library.Library("aten", "IMPL")  # noqa: F841 (kept alive for the check)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "overriding a previously registered kernel"
            lib.impl("isfinite", lambda x: torch.ones_like(x, dtype=torch.bool), "CPU")
        assert any("aten::isfinite" in c for c in snap.changes())
    finally:
        del lib  # dropping the library object removes its registrations
    assert not any("aten::isfinite" in c for c in Snapshot().changes())


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
    g._hook("object.__setattr__", (PrefixMean, "anything", None))


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
