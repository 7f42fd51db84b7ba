"""The GPU benchmarks' parts that need no GPU. gpu_benchmark.py: its sweep cases against today's
train.py, and the census of the Triton kernels a cold compile built. gpu_code_corpus.py: issue 12's
spike criterion, and the training's step rate read from the arrival times of train.py's loss lines.

A sweep case is a patch of train.py's source. When train.py changes, a case whose patch no longer
applies would only fail on the GPU machine, after its device time is spent; here it fails at once.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_benchmark  # noqa: E402
import gpu_code_corpus  # noqa: E402

PATCHED = sorted(name for name, (_, opts) in gpu_benchmark.CASES.items() if opts.get("patch"))


@pytest.mark.parametrize("name", PATCHED)
def test_every_patched_sweep_case_applies_to_todays_train_py(name, monkeypatch):
    monkeypatch.delitem(sys.modules, "train", raising=False)  # load_train registers its module
    patch = gpu_benchmark.CASES[name][1]["patch"]
    source = (REPO / "train.py").read_text()
    for old, new in patch:
        assert old in source, f"{name}: train.py no longer has {old!r}"
        assert old != new
    mod = gpu_benchmark.load_train(patch)
    assert hasattr(mod, "train") and hasattr(mod, "GPT")


def test_a_patch_that_no_longer_applies_says_which_text_is_missing(monkeypatch):
    monkeypatch.delitem(sys.modules, "train", raising=False)
    with pytest.raises(SystemExit, match="no longer has"):
        gpu_benchmark.load_train([("a line train.py never had", "x")])


def test_an_unknown_case_is_refused_with_the_names_there_are():
    with pytest.raises(SystemExit, match="no sweep case named nope; the cases: .*ve-zeros"):
        gpu_benchmark.check_cases(["base", "nope"])


def test_the_kernel_census_counts_configurations_per_kernel_and_kind(tmp_path, capsys):
    # Triton's cache: one directory per compiled configuration, the cubin named for the kernel.
    for i, name in enumerate(
        ["triton_per_fused_rms_norm_0"] * 3 + ["triton_red_fused_sum_1"] * 2 + ["triton_poi_fused_add_2"]
    ):
        (tmp_path / f"h{i}").mkdir()
        (tmp_path / f"h{i}" / f"{name}.cubin").write_bytes(b"\0")
        (tmp_path / f"h{i}" / f"{name}.json").write_text("{}")
    census = gpu_benchmark.kernel_census(tmp_path)
    assert census["by_kind"] == {
        "persistent_reduction": {"kernels": 1, "configs": 3},
        "reduction": {"kernels": 1, "configs": 2},
        "pointwise": {"kernels": 1, "configs": 1},
    }
    assert census["most_configs"] == [
        {"kernel": "triton_per_fused_rms_norm_0", "configs": 3},
        {"kernel": "triton_red_fused_sum_1", "configs": 2},
    ]
    gpu_benchmark.print_census([{"name": "base", "kernel_census": census}, {"name": "failed case"}])
    table = capsys.readouterr().out
    assert "1 / 3" in table and "triton_per_fused_rms_norm_0 x3" in table
    assert "failed case" not in table


def test_a_loss_spike_after_the_first_tenth_is_found_and_one_before_it_is_not():
    losses = [4.0 - 0.01 * i for i in range(200)]
    losses[5] = 50.0  # inside the first 10% of the steps: not checked
    losses[120] = 2 * statistics.median(losses[70:120]) + 0.1
    check = gpu_code_corpus.spike_check(losses)
    assert check["checked_from_step"] == 20
    assert [s["step"] for s in check["spikes"]] == [120]
    assert check["max_ratio_step"] == 120 and check["max_ratio"] > 2

    losses[120] = 1.9 * statistics.median(losses[70:120])  # a near miss shows in max_ratio only
    check = gpu_code_corpus.spike_check(losses)
    assert check["spikes"] == [] and 1.85 < check["max_ratio"] < 1.95

    losses[150] = float("nan")
    assert [s["step"] for s in gpu_code_corpus.spike_check(losses)["spikes"]] == [150]


def test_step_rates_are_read_per_window_from_the_loss_lines_arrival_times(capsys):
    # A loss line about once a second; 2.7 steps/s while the scoring compiles (the first 20 s), 2.8 after.
    points, steps = [], 0.0
    for second in range(60):
        steps += 2.7 if second < 20 else 2.8
        points.append((100.0 + second, int(steps)))
    rates = gpu_code_corpus.step_rates(points)
    assert [(w["from_s"], w["to_s"]) for w in rates] == [(0.0, 15.0), (15.0, 30.0), (30.0, None)]
    first, middle, last = (w["steps_per_s"] for w in rates)
    assert abs(first - 2.7) < 0.08 and abs(last - 2.8) < 0.05 and first < middle < last
    assert gpu_code_corpus.step_rates([]) == []
    assert gpu_code_corpus.step_rates([(5.0, 3)]) == []  # one line: no rate

    run = {"name": "r", "status": "ok", "benchmark": {"step_rates": rates}}
    gpu_code_corpus.print_table([run, {"name": "older result", "status": "ok"}])
    out = capsys.readouterr().out
    assert f"{first:.3f}|{middle:.3f}|{last:.3f}" in out
    assert "steps/s 0-|15-|30-" in out
