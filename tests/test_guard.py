"""Guard: what a candidate may change, and the optional guard command."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import pytest

from autoresearch_ci import guard as guard_mod
from autoresearch_ci.config import Config
from autoresearch_ci.guard import change_kind, check, run_guard_command

CFG = Config()

TRAIN = '''"""A tiny train.py."""
import random
import numpy as np
import torch

SEED = 42
LR = 0.003  # the learning rate
DEPTH = 4


def train(ctx):
    """Train for the budget."""
    torch.manual_seed(SEED)
    random.seed(1234)
    g = torch.Generator().manual_seed(7)
    rng = np.random.default_rng(3)
    model = build(depth=DEPTH, seed=SEED + 1)
    return model
'''


def guard(new_train=None, changed=("train.py",), old=None, new=None):
    old = {"train.py": TRAIN} if old is None else old
    new = {"train.py": new_train if new_train is not None else TRAIN} if new is None else new
    return check(list(changed), old, new, CFG)


def test_a_real_change_passes():
    r = guard(TRAIN.replace("LR = 0.003", "LR = 0.004"))
    assert r.ok and r.reasons == []


def test_editing_the_harness_is_rejected_by_name():
    r = guard(TRAIN.replace("LR = 0.003", "LR = 0.004"), changed=["train.py", "harness/evaluate.py"])
    assert not r.ok
    assert r.reasons == ["the harness is locked: harness/evaluate.py changed"]


def test_editing_a_workflow_or_the_config_is_rejected():
    r = guard(
        TRAIN.replace("DEPTH = 4", "DEPTH = 5"),
        changed=["train.py", ".github/workflows/tick.yml", "autoresearch.toml", "./program.md"],
    )
    assert not r.ok
    assert "the workflows are locked: .github/workflows/tick.yml changed" in r.reasons
    assert "the config is locked: autoresearch.toml changed" in r.reasons
    assert any(
        x.startswith("the research program is locked") and "program.md changed" in x for x in r.reasons
    )


def test_adding_and_deleting_files_is_rejected_by_name():
    new_file = guard(
        changed=["train.py", "helper.py"], new={"train.py": TRAIN.replace("4", "5"), "helper.py": "x"}
    )
    assert not new_file.ok and "only train.py may change: helper.py changed" in new_file.reasons
    deleted = guard(changed=["train.py"], new={})
    assert not deleted.ok and "deleting files is not allowed: train.py deleted" in deleted.reasons
    added = check(["train.py"], {}, {"train.py": TRAIN}, CFG)
    assert not added.ok and "adding files is not allowed: train.py added" in added.reasons


def test_unprotected_other_file_is_rejected():
    r = guard(TRAIN.replace("4", "5"), changed=["train.py", "README.md"])
    assert not r.ok and r.reasons == ["only train.py may change: README.md changed"]


def test_syntax_error_reports_the_line():
    bad = TRAIN.replace("DEPTH = 4", "DEPTH = = 4")
    r = guard(bad)
    assert not r.ok and len(r.reasons) == 1
    assert r.reasons[0].startswith("train.py does not compile: line 8:")


def test_null_byte_is_a_compile_error():
    r = guard(TRAIN + "\x00")
    assert not r.ok and "does not compile" in r.reasons[0]


def test_no_op_is_rejected():
    assert guard(changed=[]).reasons == ["no change: the candidate is identical to its base"]
    assert not guard().ok


def test_comment_and_docstring_only_change_is_no_functional_change():
    cosmetic = (
        TRAIN.replace("# the learning rate", "# a better comment").replace(
            '"""Train for the budget."""', '"""Train hard."""'
        )
        + "\n\n# trailing note\n"
    )
    assert change_kind(TRAIN, cosmetic) == "cosmetic"
    r = guard(cosmetic)
    assert not r.ok and r.reasons == ["no functional change: only comments, blank lines or docstrings differ"]


@pytest.mark.parametrize(
    "edit",
    [
        ("SEED = 42", "SEED = 137"),
        ("random.seed(1234)", "random.seed(99)"),
        ("manual_seed(7)", "manual_seed(8)"),
        ("seed=SEED + 1", "seed=SEED + 2"),
        ("default_rng(3)", "default_rng(4)"),
    ],
)
def test_seed_only_change_is_rejected(edit):
    new = TRAIN.replace(*edit)
    assert change_kind(TRAIN, new) == "seed-only"
    r = guard(new)
    assert not r.ok and "only a random seed changed" in r.reasons[0]


def test_seed_change_with_a_real_change_passes():
    new = TRAIN.replace("SEED = 42", "SEED = 137").replace("DEPTH = 4", "DEPTH = 6")
    assert change_kind(TRAIN, new) == "functional"
    assert guard(new).ok


def test_seedlike_names_are_not_the_only_thing_normalised():
    # a number that is not a seed stays a functional change even on a line that mentions seeds
    new = TRAIN.replace("build(depth=DEPTH, seed=SEED + 1)", "build(depth=8, seed=SEED + 1)")
    assert change_kind(TRAIN, new) == "functional"


def test_base_that_does_not_parse_still_compares_text():
    r = check(["train.py"], {"train.py": "def ("}, {"train.py": "x = 1\n"}, CFG)
    assert r.ok


# ----------------------------------------------------------------------------------------------
# the guard command


def test_guard_command_pass_and_fail(tmp_path):
    ok, out = run_guard_command("echo all good", tmp_path, 10)
    assert ok and "all good" in out
    ok, out = run_guard_command("echo failing test >&2; exit 3", tmp_path, 10)
    assert not ok and "failing test" in out and "exited with 3" in out


def test_guard_command_runs_in_workdir(tmp_path):
    (tmp_path / "marker.txt").write_text("here")
    ok, out = run_guard_command("cat marker.txt", tmp_path, 10)
    assert ok and out.strip() == "here"


def _alive(pid: int, settle_s: float = 10.0) -> bool:
    """Still running `settle_s` from now (a zombie waiting for a reaper counts as dead). A killed
    process closes its files (the guard's pipe reads EOF) a moment before the kernel marks it a
    zombie: a single look can fall in between, the more so on a busy machine."""
    end = time.monotonic() + settle_s
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                running = f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            running = False
        if not running or time.monotonic() > end:
            return running
        time.sleep(0.05)


def test_guard_command_timeout_kills_the_whole_group(tmp_path):
    # 5 s, not 1: on a busy machine the shell must get as far as starting its background job first
    ok, out = run_guard_command(
        "echo started; sleep 300 & echo $! > bg.pid; sleep 300; echo never", tmp_path, 5
    )
    assert not ok and "timed out after 5 s" in out and "started" in out and "never" not in out
    # the background job was killed with the shell: it neither outlives the guard nor holds its pipe
    assert not _alive(int((tmp_path / "bg.pid").read_text()))


def test_guard_command_timeout_with_an_escaped_grandchild(tmp_path, monkeypatch):
    monkeypatch.setattr(guard_mod, "DRAIN_SECONDS", 0.5)
    cmd = "setsid sleep 300 & echo $! > esc.pid; sleep 300"
    try:
        ok, out = run_guard_command(cmd, tmp_path, 5)  # time for the escapee to start, even under load
        assert not ok and "timed out" in out and "outlived it" in out
    finally:  # the escaped process is ours to clean up
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            os.kill(int((tmp_path / "esc.pid").read_text()), signal.SIGKILL)


def test_guard_command_sees_no_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-secret")
    ok, out = run_guard_command("env", tmp_path, 10)
    assert ok and "secret" not in out and "PATH=" in out
    assert os.environ["GITHUB_TOKEN"] == "ghp-secret"  # the caller's environment is untouched
