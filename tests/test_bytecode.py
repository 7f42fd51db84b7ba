"""The trusted bytecode warm-up (harness/bytecode.py): sandboxed interpreters read bytecode only from
the harness's own directory, so what they import must have been compiled there by a trusted process."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from harness import bytecode


def cached_pyc(prefix: Path, module: str) -> Path:
    """Where an interpreter run with -X pycache_prefix=prefix keeps `module`'s bytecode."""
    src = os.path.realpath(importlib.util.find_spec(module).origin)
    tag = sys.implementation.cache_tag
    name = Path(src).stem
    return Path(str(prefix) + os.path.dirname(src)) / f"{name}.{tag}.pyc"


MODS = ("colorsys", "not_installed_x")  # a small stdlib module, and one that is not installed


def test_warming_compiles_the_modules_into_the_prefix_once(tmp_path):
    prefix = tmp_path / "pycache"
    lines: list[str] = []
    spent = bytecode.ensure_warm(str(prefix), "cpu", log=lines.append, modules=MODS)
    assert spent is not None and spent >= 0
    assert cached_pyc(prefix, "colorsys").is_file()
    stamp = Path(bytecode.stamp_path(str(prefix), "cpu", MODS))
    assert stamp.is_file() and "colorsys" in stamp.read_text()
    assert any("once per install" in line for line in lines)
    # The stamp: a second call does nothing (not even start an interpreter).
    again: list[str] = []
    assert bytecode.ensure_warm(str(prefix), "cpu", log=again.append, modules=MODS) is None
    assert again == []


def test_no_trusted_prefix_means_nothing_to_warm(tmp_path):
    assert bytecode.ensure_warm(None, "cpu", log=lambda s: None, modules=("colorsys",)) is None


def test_a_failing_warm_up_leaves_no_stamp_and_the_run_goes_on(tmp_path, monkeypatch):
    boom = tmp_path / "mods"
    boom.mkdir()
    (boom / "boom_on_import.py").write_text("raise RuntimeError('broken package')\n")
    monkeypatch.setenv("PYTHONPATH", f"{boom}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    prefix = tmp_path / "pycache"
    lines: list[str] = []
    assert bytecode.ensure_warm(str(prefix), "cpu", log=lines.append, modules=("boom_on_import",)) is None
    assert not Path(bytecode.stamp_path(str(prefix), "cpu", ("boom_on_import",))).exists()
    assert any("warming the bytecode failed" in line and "broken package" in line for line in lines), lines


def test_the_stamp_depends_on_the_device_kind_and_the_modules(tmp_path):
    p = str(tmp_path)
    assert bytecode.stamp_path(p, "cpu") != bytecode.stamp_path(p, "cuda")
    assert bytecode.stamp_path(p, "cuda:1") == bytecode.stamp_path(p, "cuda")
    assert bytecode.stamp_path(p, "cpu", ("a",)) != bytecode.stamp_path(p, "cpu", ("b",))


def test_the_warm_up_refuses_to_run_without_a_prefix():
    import subprocess

    p = subprocess.run(
        [sys.executable, "-m", "harness.bytecode", "cpu", "colorsys"],
        env={k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert p.returncode != 0 and "pycache_prefix" in p.stderr


def test_a_bytecode_directory_that_cannot_be_written_is_a_warning_and_the_run_goes_on(tmp_path):
    """A read-only state (a mounted volume; here a path through a regular file, which fails for root
    too): no warm-up, a warning that names the setting to change, never an exception."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    lines: list[str] = []
    assert bytecode.ensure_warm(str(blocker / "pycache"), "cpu", log=lines.append, modules=MODS) is None
    assert len(lines) == 1 and "cannot be written" in lines[0] and "AUTORESEARCH_STATE" in lines[0]


def test_prepare_warms_the_bytecode_for_the_presets_device_once(tmp_path, prepared_tiny, monkeypatch, capsys):
    """`python -m harness prepare` is the set-up step: it pays the warm-up, so the first run does not."""
    import harness.__main__ as cli
    import harness.sandbox

    prefix = tmp_path / "pycache"
    calls: list[tuple[str, str]] = []
    real = bytecode.ensure_warm

    def small_warm(pfx, device, log=print, modules=bytecode.MODULES):
        calls.append((pfx, device))
        return real(pfx, device, log=log, modules=MODS)

    monkeypatch.setattr(harness.sandbox, "trusted_pycache", lambda: str(prefix))
    monkeypatch.setattr(bytecode, "ensure_warm", small_warm)
    assert cli.main(["prepare", "--preset", "tiny"]) == 0
    first = capsys.readouterr().out
    assert calls == [(str(prefix), "cpu")]
    assert cached_pyc(prefix, "colorsys").is_file()
    assert "once per install" in first and "compiled the bytecode sandboxed runs import" in first
    # Prepared and warm: the second prepare compiles nothing and says nothing about it.
    assert cli.main(["prepare", "--preset", "tiny"]) == 0
    assert "once per install" not in capsys.readouterr().out and len(calls) == 2


def test_a_failed_prepare_warms_nothing(monkeypatch, capsys):
    import harness.__main__ as cli
    import harness.data

    monkeypatch.setattr(bytecode, "ensure_warm", lambda *a, **k: pytest.fail("warmed after a failed prepare"))
    assert cli.main(["prepare", "--preset", "no-such-preset"]) == 2
    assert "unknown preset" in capsys.readouterr().err

    def unreachable(*a, **k):
        raise harness.data.CacheError("the mirror did not answer")

    monkeypatch.setattr(harness.data, "prepare", unreachable)
    assert cli.main(["prepare", "--preset", "tiny"]) == 3
    assert "prepare failed: the mirror did not answer" in capsys.readouterr().err


def test_a_warm_up_that_cannot_write_its_stamp_does_not_fail_the_set_up(tmp_path, monkeypatch):
    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bytecode, "ensure_warm", full_disk)
    lines: list[str] = []
    assert bytecode.warm_for_preset("tiny", str(tmp_path), log=lines.append) is None
    assert len(lines) == 1 and "No space left on device" in lines[0] and "first run compiles it" in lines[0]
