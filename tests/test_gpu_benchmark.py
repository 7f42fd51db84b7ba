"""benchmarks/gpu_benchmark.py's parts that need no GPU: its sweep cases against today's train.py,
and the census of the Triton kernels a cold compile built.

A sweep case is a patch of train.py's source. When train.py changes, a case whose patch no longer
applies would only fail on the GPU machine, after its device time is spent; here it fails at once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_benchmark  # noqa: E402

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
