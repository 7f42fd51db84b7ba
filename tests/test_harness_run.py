"""End-to-end runs of `python -m harness run` on the tiny preset: the honest file and the red team.

Each run is a real supervisor + worker pair (about 10 s on two cores, most of it importing torch),
in a scratch directory as the local runner does it. The red-team files live in tests/redteam/; each
one's docstring says what it tries and what the harness must answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.integrity import file_sha256, harness_sha256
from harness.presets import get_preset, overrun_tolerance
from harness.supervisor import METRIC_KEYS

REPO = Path(__file__).resolve().parents[1]
REDTEAM = REPO / "tests" / "redteam"


def run_harness(train_file, tmp_path, *, preset="tiny", seed=0, env=None, args=(), timeout=240):
    out = tmp_path / "metrics.json"
    cmd = [sys.executable, "-m", "harness", "run", str(train_file), "--preset", preset, "--out", str(out),
           "--seed", str(seed), "--quiet", *args]  # fmt: skip
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    p = subprocess.run(cmd, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=timeout)
    metrics = json.loads(out.read_text()) if out.exists() else None
    return p, metrics


def variant(tmp_path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def honest_fixed_steps(tmp_path, steps=1, name="honest_fixed.py") -> Path:
    """honest.py stopping after `steps` steps, with an LR schedule that does not look at the clock
    (the tiny preset's CPU-second holds about 15 steps whatever the machine's load)."""
    src = (REDTEAM / "honest.py").read_text()
    assert "MAX_STEPS = 0 " in src
    return variant(tmp_path, name, src.replace("MAX_STEPS = 0 ", f"MAX_STEPS = {steps} "))


# -- usage and infrastructure errors (no worker is started) -------------------------------------------


def test_unknown_preset_exits_2_and_lists_the_presets(tmp_path):
    p, m = run_harness(REDTEAM / "honest.py", tmp_path, preset="huge")
    assert p.returncode == 2
    for name in ("tiny", "cpu", "gpu"):
        assert name in p.stderr
    assert m["status"] == "infra_error" and "unknown preset" in m["error"]


def test_missing_train_file_exits_2(tmp_path):
    p, _ = run_harness(tmp_path / "nope.py", tmp_path)
    assert p.returncode == 2 and "no such train file" in p.stderr


def test_missing_cache_exits_3_and_names_the_prepare_command(tmp_path):
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    p, m = run_harness(REDTEAM / "honest.py", tmp_path, env={"AUTORESEARCH_CACHE": str(empty)})
    assert p.returncode == 3
    assert "python -m harness prepare --preset tiny" in p.stderr
    assert m["status"] == "infra_error" and "python -m harness prepare" in m["error"]
    assert set(METRIC_KEYS) <= set(m)


# -- the honest file ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_honest_run_is_ok_with_every_metric(prepared_tiny, tmp_path):
    # A compile-cache partition for this train.py (what an earlier run of it would have left): the run
    # starts from a copy of it (harness/compile_cache.py).
    from harness.compile_cache import LAYOUT

    part = tmp_path / "compile" / LAYOUT / file_sha256(REDTEAM / "honest.py") / "inductor"
    part.mkdir(parents=True)
    (part / "kernel.py").write_text("# what inductor kept\n")
    p, m = run_harness(
        REDTEAM / "honest.py", tmp_path, env={"AUTORESEARCH_COMPILE_CACHE": str(tmp_path / "compile")}
    )
    assert p.returncode == 0, p.stderr
    # Kept as it was when the clock started (seeded, and honest.py writes none of its own).
    assert m["compile_cache_seeded_bytes"] == 21 and m["compile_cache_kept_bytes"] == 21
    assert m["compile_cache_snapshot_seconds"] >= 0
    assert m["status"] == "ok", m["error"]
    assert set(METRIC_KEYS) <= set(m)
    assert 0 < m["val_bpb"] < 4.0  # uniform over 4096 ids is 12 bits / 4.3 bytes = 2.8 bits per byte
    assert m["harness_sha256"] == harness_sha256()
    assert m["train_sha256"] == file_sha256(REDTEAM / "honest.py")
    assert m["preset"] == "tiny" and m["seed"] == 0 and m["device"] == "cpu" and m["torch_version"]
    tiny = get_preset("tiny")
    assert m["clock"] == "cpu" and m["isolation"] in ("bwrap", "none")
    assert tiny.budget_seconds <= m["training_seconds"] <= tiny.budget_seconds + overrun_tolerance(tiny)
    assert m["training_cpu_seconds"] == m["training_seconds"] and m["training_wall_seconds"] > 0
    assert m["total_seconds"] >= m["training_seconds"]
    assert m["num_steps"] >= 1 and m["num_params"] > 0 and m["peak_memory_mb"] > 0
    assert m["tokens_per_second"] > 0
    assert m["flops_per_token"] is None  # counted on a GPU only, where MFU means something
    assert m["mfu_percent"] is None and "CPU" in m["mfu_note"]
    assert m["probe"]["rows_compared"] == m["eval_rows"] > 0 and m["probe"]["max_diff_nats"] == 0.0
    assert m["eval_tokens"] > 0 and m["eval_bytes"] > m["eval_tokens"]
    assert "status ok" in p.stdout


@pytest.mark.slow
def test_same_seed_same_steps_gives_the_same_val_bpb(prepared_tiny, tmp_path):
    """With a fixed step count (no time dependence) a run is bit-reproducible; another seed is not
    the same run. The budgeted spread (steps vary with machine speed) is measured, not asserted."""
    f = honest_fixed_steps(tmp_path)
    vals = []
    for i, seed in enumerate((0, 0, 1)):
        d = tmp_path / f"run{i}"
        d.mkdir()
        _, m = run_harness(f, d, seed=seed)
        assert m["status"] == "ok", m["error"]
        vals.append(m["val_bpb"])
    assert vals[0] == vals[1]
    assert vals[2] != vals[0]


# -- the red team -------------------------------------------------------------------------------------

RED_TEAM = [
    ("raises.py", "crash", ["boom: the candidate's own bug", "Traceback"]),
    ("nan.py", "nan", ["training loss is nan"]),
    (
        "no_entry.py",
        "invalid",
        ["no build_model and no train function", "def train(ctx) -> torch.nn.Module", "def build_model(ctx)"],
    ),
    ("tamper.py", "invalid", ["read-only"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, status, words", RED_TEAM, ids=[r[0] for r in RED_TEAM])
def test_red_team(prepared_tiny, tmp_path, name, status, words):
    p, m = run_harness(REDTEAM / name, tmp_path)
    assert p.returncode == 0, p.stderr  # the candidate's failure is a result, not an infra error
    assert m["status"] == status, m["error"]
    for w in words:
        assert w in m["error"], m["error"]
    assert m["val_bpb"] is None
    assert set(METRIC_KEYS) <= set(m)
    if name == "tamper.py":  # it swallows the PermissionError and would train on: the run ends there
        assert m["train_batches"] == 0 and m.get("clock_start") is None and m.get("eval_rows") is None


@pytest.mark.slow
def test_non_finite_weights_give_nan(prepared_tiny, tmp_path):
    src = honest_fixed_steps(tmp_path, steps=1).read_text()
    src = src.replace(
        "    return model\n",
        "    with torch.no_grad():\n        model.head.weight.fill_(float('nan'))\n    return model\n",
    )
    _, m = run_harness(variant(tmp_path, "nan_weights.py", src), tmp_path)
    assert m["status"] == "nan" and "not finite" in m["error"]


@pytest.mark.slow
def test_static_scan_rejects_before_import_with_the_contract(prepared_tiny, tmp_path):
    f = variant(tmp_path, "ctypes_train.py", "import ctypes\nraise SystemExit('never imported')\n")
    _, m = run_harness(f, tmp_path)
    assert m["status"] == "invalid"
    assert "imports ctypes" in m["error"] and "def train(ctx) -> torch.nn.Module" in m["error"]


@pytest.mark.slow
def test_cuda_requested_without_cuda_is_an_infra_error(prepared_tiny, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    p, m = run_harness(REDTEAM / "honest.py", tmp_path, args=("--device", "cuda"))
    assert p.returncode == 3
    assert m["status"] == "infra_error" and "CUDA" in m["error"]
