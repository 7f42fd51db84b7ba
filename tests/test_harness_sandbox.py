"""The red team against the operating-system layer: one train.py per class of cheat, each run twice,
with the in-process checks on and off (AUTORESEARCH_TEST_NO_INPROCESS=1), so the sandbox, the split
scoring and the harness's clock are shown to hold by themselves.

Every run ends invalid / crash / timeout / nan, or is shown harmless by what the harness itself
accounts: what the candidate's own attempt printed into the log (ENOENT, never STOLE), files that are
unchanged, processes that no longer exist, CPU seconds on the harness's clock; never by comparing a
val_bpb with a timed honest run (fixed-step runs are bit-reproducible, and only those are compared).
The tiny preset's clock is CPU time, so these runs do not depend on how busy the machine is.

With the in-process checks off, the attempts that only try to reach a file, a secret or a process's
environment (and report what they got) share one run: `attempts_off` runs each of those train.py
files in a namespace of its own inside one candidate (every attack, then one honest training), with
each file's output tagged by its name; each test then reads its own file's lines. With the checks on,
each file still runs alone: there the first violation ends the run.
"""

from __future__ import annotations

import compileall
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.presets import get_preset, overrun_tolerance
from harness.protocol import METRIC_KEYS
from harness.sandbox import ENV_FORCE_NONE, ENV_INPROCESS_OFF, probe
from harness.scorer import ENV_TEST_SCORING_BACKEND, MODEL_ERROR_CHARS, MODEL_LOG_LINES

REPO = Path(__file__).resolve().parents[1]
REDTEAM = REPO / "tests" / "redteam"
TINY = get_preset("tiny")
MODES = ["inprocess-on", "inprocess-off"]
needs_bwrap = pytest.mark.skipif(probe()[0] != "bwrap", reason=f"no sandbox here: {probe()[1]}")
pytestmark = [pytest.mark.slow]


def run(train: Path, tmp: Path, mode: str = "inprocess-on", env: dict | None = None, wrap: str | None = None):
    out = tmp / "metrics.json"
    e = dict(os.environ, **(env or {}))
    e["PYTHONPATH"] = str(REPO)
    if mode == "inprocess-off":
        e[ENV_INPROCESS_OFF] = "1"
    cmd = [
        sys.executable,
        "-m",
        "harness",
        "run",
        str(train),
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--quiet",
    ]
    if wrap:  # run the harness under a shell whose environment (an ancestor's) carries secrets too
        cmd = ["sh", "-c", f'{wrap} exec "$@"', "sh", *cmd]
    p = subprocess.run(cmd, cwd=tmp, env=e, capture_output=True, text=True, timeout=400)
    m = json.loads(out.read_text())
    log = Path(m["log_path"]).read_text(errors="replace") if m.get("log_path") else ""
    return p, m, log


def adversary(name: str, tmp: Path, **subs) -> Path:
    src = (REDTEAM / name).read_text()
    for k, v in subs.items():
        src = src.replace(f"__{k}__", str(v))
    path = tmp / name
    path.write_text(src)
    return path


# -- one run for every attempt, with the in-process checks off ------------------------------------------

# Each red-team file below and the function that makes its attempt. readval.py is the one whose train()
# runs (its own attempt, then honest training): the others' attacks run first.
ATTEMPTS = {
    "val_subprocess.py": "steal",
    "val_dirfd.py": "steal",
    "val_dupfd.py": "steal",
    "val_fromfile.py": "steal",
    "rewrite_trainbin.py": "rewrite",
    "steal_secrets.py": "steal",
    "write_home.py": "write",
    "pyc_plant.py": "plant",
}
TRAINS = "readval.py"
# Each file runs in a namespace of its own (its module-level code too, so readval.py's attempt at
# import is made), with print() tagging every line with the file's name.
ATTEMPTS_TEMPLATE = '''"""Made by tests/test_harness_sandbox.py (attempts_off): red-team files in one run."""
import builtins

SOURCES = __SOURCES__
ATTACKS = __ATTACKS__


def _load(name, source):
    def tagged(*args, **kwargs):
        builtins.print(f"<{name}>", *args, **kwargs)

    ns = {"__name__": "redteam_" + name[:-3], "print": tagged}
    exec(compile(source, name, "exec"), ns)
    return ns


MODULES = {name: _load(name, source) for name, source in SOURCES.items()}
build_model = MODULES[__TRAINS__]["build_model"]


def train(ctx):
    for name, attack in ATTACKS.items():
        MODULES[name][attack]()
    return MODULES[__TRAINS__]["train"](ctx)
'''


@dataclass
class Shared:
    """The one run of `attempts_off` and what the tests compare: files before and after it."""

    p: subprocess.CompletedProcess
    m: dict
    log: str
    home: Path
    repo: Path
    marker: str
    tokens: dict[str, str]
    cache_before: dict[Path, str]
    cache_after: dict[Path, str]
    harness_before: dict[Path, int]
    harness_after: dict[Path, int]

    def lines(self, name: str) -> str:
        """What one red-team file printed (its tagged lines, tags removed)."""
        tag = f"<{name}> "
        lines = self.log.splitlines(keepends=True)
        return "".join(line[len(tag) :] for line in lines if line.startswith(tag))


def secret_world(tmp: Path) -> tuple[Path, Path, dict[str, str], dict[str, str], str]:
    """A caller's home and a self-hosted runner full of credentials, secrets in the environment and
    in an ancestor's: (home, runner, tokens, env, wrap)."""
    home, runner = tmp / "home", tmp / "actions-runner"
    token = {
        k: f"SECRET{k}{secrets.token_hex(8)}"
        for k in ("GIT", "MODAL", "GH", "RUNNER", "ENV1", "ENV2", "ENV3")
    }
    (home / ".config" / "gh").mkdir(parents=True)
    runner.mkdir()
    (home / ".git-credentials").write_text(f"https://x:{token['GIT']}@github.com\n")
    (home / ".modal.toml").write_text(f'[default]\ntoken_id = "{token["MODAL"]}"\n')
    (home / ".config" / "gh" / "hosts.yml").write_text(f"github.com:\n  oauth_token: {token['GH']}\n")
    for name in (".credentials", ".runner", ".credentials_rsaparams"):
        (runner / name).write_text(f'{{"token": "{token["RUNNER"]}"}}\n')
    env = {"HOME": str(home), "GITHUB_TOKEN": token["ENV1"], "MODAL_TOKEN_SECRET": token["ENV2"]}
    return home, runner, token, env, f"ANCESTOR_SECRET={token['ENV3']} "


def harness_mtimes(settle: bool = False) -> dict[Path, int]:
    """Every harness file's and folder's mtime. settle: first compile whatever bytecode of the
    harness is missing, as this trusted process may: otherwise another test's process, importing a
    harness module for the first time in a fresh clone, writes it into harness/__pycache__ during the
    run and the folder's mtime moves. Never after a run: that could overwrite what was planted."""
    if settle:
        compileall.compile_dir(str(REPO / "harness"), quiet=1)
    return {q: q.stat().st_mtime_ns for q in (REPO / "harness").rglob("*")}


@pytest.fixture(scope="module")
def attempts_off(prepared_tiny, cache_dir, tmp_path_factory) -> Shared:
    tmp = tmp_path_factory.mktemp("attempts_off")
    home, runner, token, env, wrap = secret_world(tmp)
    (home / ".bashrc").write_text("# mine\n")
    repo = tmp / "checkout"
    (repo / ".git" / "hooks").mkdir(parents=True)
    marker = f"planted{secrets.token_hex(6)}"
    subs = {"CACHE": cache_dir, "HOME": home, "RUNNER": runner, "REPO": repo, "HARNESS": REPO / "harness",
            "MARKER": marker}  # fmt: skip
    sources = {}
    for name in [*ATTEMPTS, TRAINS]:
        src = (REDTEAM / name).read_text()
        for k, v in subs.items():
            src = src.replace(f"__{k}__", str(v))
        sources[name] = src
    train = tmp / "train.py"
    train.write_text(
        ATTEMPTS_TEMPLATE.replace("__SOURCES__", repr(sources))
        .replace("__ATTACKS__", repr(ATTEMPTS))
        .replace("__TRAINS__", repr(TRAINS))
    )
    cache_files = sorted(prepared_tiny.dir.glob("*"))
    cache_before, harness_before = {f: sha(f) for f in cache_files}, harness_mtimes(settle=True)
    p, m, log = run(train, tmp, "inprocess-off", env=env, wrap=wrap)
    return Shared(p, m, log, home, repo, marker, token, cache_before, {f: sha(f) for f in cache_files},
                  harness_before, harness_mtimes())  # fmt: skip


# The mode of a test whose off run is attempts_off's: its tests share one xdist worker, so the run
# is made once per session.
SHARED_MODES = ["inprocess-on", pytest.param("inprocess-off", marks=pytest.mark.xdist_group("attempts_off"))]


def alive_with(marker: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    out.append(int(pid))
            except OSError:
                pass
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_result(p, m):
    assert p.returncode == 0, (p.stderr, m.get("error"))
    assert set(METRIC_KEYS) <= set(m)
    assert m["isolation"] == "bwrap" and m["clock"] == "cpu"


# -- validation data ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", SHARED_MODES)
@pytest.mark.parametrize(
    "name", ["val_subprocess.py", "val_dirfd.py", "val_dupfd.py", "val_fromfile.py", "readval.py"]
)
@needs_bwrap
def test_validation_data_is_out_of_reach(prepared_tiny, cache_dir, tmp_path, name, mode, request):
    if mode == "inprocess-off":
        shared = request.getfixturevalue("attempts_off")
        p, m, log = shared.p, shared.m, shared.log
        if name != TRAINS:  # readval.py prints nothing: it keeps what it read
            assert shared.lines(name), f"{name} made no attempt"
    else:
        p, m, log = run(adversary(name, tmp_path, CACHE=cache_dir), tmp_path, mode)
    assert_result(p, m)
    assert "STOLE" not in log
    assert m["status"] in ("ok", "invalid"), m["error"]
    if m["status"] == "invalid":
        assert mode == "inprocess-on" and "validation data never enters training" in m["error"], m["error"]


@needs_bwrap
def test_what_the_scoring_saw_never_reaches_a_later_training(prepared_tiny, tmp_path):
    """The scoring's model processes see the validation rows, and they run the candidate's forward,
    which can write them into its compile-cache directory. Two runs of one train.py share a
    compile-cache partition (a replication is exactly that), so nothing a model process wrote may be
    kept: the second run's training must not find the rows. With the in-process checks off: the
    harness's own handling of the cache is what is tested. The scoring compiles (the eager backend a
    test may ask for), as a GPU preset's does."""
    f = tmp_path / "train.py"
    f.write_text((REDTEAM / "leak_val_cache.py").read_text())
    cache = tmp_path / "compile"
    env = {ENV_TEST_SCORING_BACKEND: "eager", "AUTORESEARCH_COMPILE_CACHE": str(cache)}
    logs = []
    for i in (1, 2):
        d = tmp_path / f"run{i}"
        d.mkdir()
        p, m, log = run(f, d, "inprocess-off", env=env)
        assert_result(p, m)
        assert m["status"] == "ok" and m["eval_compiled"] is True, m["error"]
        logs.append(log)
    assert "LEAK none" in logs[0], logs[0][-2000:]
    assert "LEAK none" in logs[1] and "LEAK found" not in logs[1], logs[1][-2000:]
    assert not list(cache.rglob("rows.bin")), "a model process's file is in the compile cache"


@needs_bwrap
def test_what_a_run_wrote_after_its_clock_started_never_reaches_the_next_run(prepared_tiny, tmp_path):
    """The training sandbox's compile cache is kept for the next run of the same train.py, so it is a
    channel from one run to the next: weights written there after training would let a replication
    start where the last run ended. The harness keeps the cache as it was when the clock started
    (before the first batch: nothing learnt from the data yet). With the in-process checks off: the
    harness's own handling of the cache is what is tested."""
    f = tmp_path / "train.py"
    f.write_text((REDTEAM / "carry_state.py").read_text())
    cache = tmp_path / "compile"
    logs = []
    for i in (1, 2):
        d = tmp_path / f"run{i}"
        d.mkdir()
        p, m, log = run(f, d, "inprocess-off", env={"AUTORESEARCH_COMPILE_CACHE": str(cache)})
        assert_result(p, m)
        assert m["status"] == "ok", m["error"]
        assert "WROTE" in log, log[-2000:]
        logs.append(log)
    assert "CARRY none" in logs[0] and "KERNEL none" in logs[0], logs[0][-2000:]
    # The second run starts warm (what the first compiled), and with nothing the first learnt.
    assert "KERNEL # as compiled" in logs[1], logs[1][-2000:]
    assert "DOOMED found" in logs[1], logs[1][-2000:]
    assert "CARRY none" in logs[1] and "CARRY found" not in logs[1], logs[1][-2000:]
    assert not list(cache.rglob("state.bin")), "what a run wrote after its clock started was kept"


# -- the causality probe ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "name", ["probe_call_order.py", "probe_prefix_memory.py", "probe_private_random.py", "noncausal.py"]
)
@needs_bwrap
def test_looking_ahead_is_invalid_however_the_probe_is_evaded(prepared_tiny, tmp_path, name, mode):
    p, m, _ = run(REDTEAM / name, tmp_path, mode)
    assert_result(p, m)
    assert m["status"] == "invalid" and "not causal" in m["error"], m["error"]
    assert m["val_bpb"] is None


# -- the model after train() returns --------------------------------------------------------------------


@needs_bwrap
@pytest.mark.parametrize("mode", MODES)
def test_a_thread_training_during_evaluation_is_dead_before_scoring(prepared_tiny, tmp_path, mode):
    p, m, log = run(REDTEAM / "eval_thread.py", tmp_path, mode)
    assert_result(p, m)
    assert m["status"] in ("ok", "invalid"), m["error"]
    size = len(log)
    time.sleep(1.0)  # the log does not grow: nothing of the sandbox is alive to write to it
    assert len(Path(m["log_path"]).read_text(errors="replace")) == size


@needs_bwrap
@pytest.mark.parametrize("mode", MODES)
def test_a_model_that_crashes_in_evaluation_is_the_candidates_crash(prepared_tiny, tmp_path, mode):
    p, m, _ = run(REDTEAM / "eval_crash.py", tmp_path, mode)
    assert_result(p, m)
    assert m["status"] == "crash" and "kaboom" in m["error"], m["error"]
    # Its message held every token id of its batch (thousands of characters): the end survives, cut.
    assert "ROWS" in m["error"] and len(m["error"]) <= MODEL_ERROR_CHARS, len(m["error"])


@needs_bwrap
def test_a_killed_model_process_reports_only_the_end_of_its_log(prepared_tiny, tmp_path):
    """The model process prints the rows it was given, one line each, then SIGKILLs itself: the error
    names the signal and carries at most MODEL_LOG_LINES of that log, within MODEL_ERROR_CHARS."""
    p, m, _ = run(adversary("eval_crash.py", tmp_path, HOW="kill"), tmp_path)
    assert_result(p, m)
    assert m["status"] == "crash" and re.search(r"signal 9\b", m["error"].splitlines()[0]), m["error"]
    rows = [line for line in m["error"].splitlines() if line.startswith("ROWS")]
    assert 0 < len(rows) <= MODEL_LOG_LINES and len(m["error"]) <= MODEL_ERROR_CHARS, m["error"]


# -- results, processes and files outside the sandbox ---------------------------------------------------


@needs_bwrap
@pytest.mark.parametrize("mode", MODES)
def test_an_escaped_process_cannot_rewrite_the_result(prepared_tiny, tmp_path, mode):
    marker = f"ESCAPEE-{secrets.token_hex(6)}"
    out = tmp_path / "metrics.json"
    p, m, _ = run(adversary("escape_setsid.py", tmp_path, OUT=out, MARKER=marker), tmp_path, mode)
    assert_result(p, m)
    time.sleep(1.5)
    assert not alive_with(marker)
    again = json.loads(out.read_text())
    assert again == m and again.get("val_bpb") != 0.01
    if mode == "inprocess-on":
        assert m["status"] == "invalid" and "start_new_session" in m["error"], m["error"]


@needs_bwrap
@pytest.mark.parametrize("mode", MODES)
def test_forged_messages_never_make_a_result(prepared_tiny, tmp_path, mode):
    p, m, _ = run(REDTEAM / "forge_result.py", tmp_path, mode)
    assert_result(p, m)
    assert m["status"] == "invalid" and m["val_bpb"] is None, m["error"]


@needs_bwrap
@pytest.mark.parametrize("mode", MODES)
def test_nothing_outlives_the_run(prepared_tiny, tmp_path, mode):
    marker = f"OUTLIVE{secrets.token_hex(6)}"
    p, m, _ = run(adversary("outlive.py", tmp_path, MARKER=marker), tmp_path, mode)
    assert_result(p, m)
    assert m["status"] == "ok", m["error"]
    assert not alive_with(marker)


@needs_bwrap
@pytest.mark.parametrize("mode", SHARED_MODES)
def test_no_bytecode_can_be_planted_in_the_harness(prepared_tiny, tmp_path, mode, request):
    harness = REPO / "harness"
    if mode == "inprocess-off":
        shared = request.getfixturevalue("attempts_off")
        p, m, log, marker = shared.p, shared.m, shared.lines("pyc_plant.py"), shared.marker
        before, after = shared.harness_before, shared.harness_after
        assert log, "pyc_plant.py made no attempt"
    else:
        marker = f"planted{secrets.token_hex(6)}"
        before = harness_mtimes(settle=True)
        p, m, log = run(adversary("pyc_plant.py", tmp_path, HARNESS=harness, MARKER=marker), tmp_path, mode)
        after = harness_mtimes()
    assert_result(p, m)
    assert not list(harness.rglob(f"{marker}*"))
    assert {q: t for q, t in after.items() if q in before} == before
    assert "PLANTED" not in log
    assert m["pycache_prefix"] and not m["pycache_prefix"].startswith(str(harness))


@needs_bwrap
@pytest.mark.parametrize("mode", SHARED_MODES)
def test_the_data_cache_cannot_be_rewritten(prepared_tiny, cache_dir, tmp_path, mode, request):
    files = sorted(prepared_tiny.dir.glob("*"))
    if mode == "inprocess-off":
        shared = request.getfixturevalue("attempts_off")
        p, m, log = shared.p, shared.m, shared.lines("rewrite_trainbin.py")
        before, after = shared.cache_before, shared.cache_after
        assert log, "rewrite_trainbin.py made no attempt"
    else:
        before = {f: sha(f) for f in files}
        p, m, log = run(adversary("rewrite_trainbin.py", tmp_path, CACHE=cache_dir), tmp_path, mode)
        after = {f: sha(f) for f in files}
    assert_result(p, m)
    assert "REWROTE" not in log
    assert after == before == {f: sha(f) for f in files}


@needs_bwrap
@pytest.mark.parametrize("mode", SHARED_MODES)
def test_no_secret_is_reachable(prepared_tiny, tmp_path, mode, request):
    if mode == "inprocess-off":
        shared = request.getfixturevalue("attempts_off")
        p, m, log, token = shared.p, shared.m, shared.log, shared.tokens
        looked = shared.lines("steal_secrets.py")
    else:
        home, runner, token, env, wrap = secret_world(tmp_path)
        train = adversary("steal_secrets.py", tmp_path, HOME=home, RUNNER=runner)
        p, m, log = run(train, tmp_path, mode, env=env, wrap=wrap)
        looked = log
    assert_result(p, m)
    assert m["status"] == "ok", m["error"]
    assert "ENVIRON" in looked or "NOPE" in looked  # it did look
    blob = log + json.dumps(m) + p.stdout + p.stderr
    for t in token.values():
        assert t not in blob


@needs_bwrap
@pytest.mark.parametrize("mode", SHARED_MODES)
def test_home_and_git_hooks_are_out_of_reach(prepared_tiny, tmp_path, mode, request):
    if mode == "inprocess-off":
        shared = request.getfixturevalue("attempts_off")
        p, m, log, home, repo = shared.p, shared.m, shared.lines("write_home.py"), shared.home, shared.repo
        assert log, "write_home.py made no attempt"
    else:
        home, repo = tmp_path / "home", tmp_path / "checkout"
        (repo / ".git" / "hooks").mkdir(parents=True)
        home.mkdir()
        (home / ".bashrc").write_text("# mine\n")
        marker = f"HOOKED{secrets.token_hex(6)}"
        p, m, log = run(
            adversary("write_home.py", tmp_path, HOME=home, REPO=repo, MARKER=marker),
            tmp_path,
            mode,
            env={"HOME": str(home)},
        )
    assert_result(p, m)
    assert (home / ".bashrc").read_text() == "# mine\n"
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()
    assert f"WROTE {home}" not in log and f"WROTE {repo}" not in log


@needs_bwrap
@pytest.mark.parametrize("mode", MODES)
def test_bending_the_metric_in_process_changes_nothing(prepared_tiny, tmp_path, mode):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    bent = adversary("bend_metric.py", tmp_path / "a")
    plain = adversary("bend_metric.py", tmp_path / "b")
    plain.write_text(plain.read_text().replace("ENABLED = True", "ENABLED = False"))
    p, m, _ = run(bent, tmp_path / "a", mode)
    assert_result(p, m)
    if m["status"] == "invalid":  # the static scan, or its patched json.dumps broke its own channel
        assert mode == "inprocess-on" or "weights" in m["error"] or "protocol" in m["error"], m["error"]
        return
    _, twin, _ = run(plain, tmp_path / "b", mode)
    assert m["status"] == "ok" and twin["status"] == "ok", (m["error"], twin["error"])
    assert m["val_bpb"] == twin["val_bpb"] and m["eval_tokens"] == twin["eval_tokens"]
    # What the harness served, not num_steps: that is the worker's own report (or, when the patched
    # json.dumps garbled it, its last progress event, which is sent at most every EVENT_EVERY_S).
    assert m["train_batches"] == twin["train_batches"] == 2


@pytest.fixture(scope="module")
def honest_one_step(prepared_tiny, tmp_path_factory) -> tuple[str, float]:
    """(status, val_bpb) of honest.py at one fixed step: the reference the patching runs must equal.
    The in-process checks change no number, so one run serves both modes."""
    d = tmp_path_factory.mktemp("honest_one_step")
    f = d / "train.py"
    f.write_text((REDTEAM / "honest.py").read_text().replace("MAX_STEPS = 0 ", "MAX_STEPS = 1 "))
    p, m, _ = run(f, d)
    assert_result(p, m)
    return m["status"], m["val_bpb"]


@needs_bwrap
@pytest.mark.xdist_group("monkeypatch")  # one worker: the reference run is made once for both modes
@pytest.mark.parametrize("mode", MODES)
def test_monkeypatching_torch_in_the_worker_changes_nothing(honest_one_step, tmp_path, mode):
    """monkeypatch.py and patch_in_forward.py patch torch / the harness in their own processes; with
    fixed steps their val_bpb equals honest.py's (same seed, same steps: bit-reproducible)."""
    assert honest_one_step[0] == "ok"
    for i, src in enumerate(
        [
            (REDTEAM / "monkeypatch.py").read_text().replace("MAX_STEPS = 0 ", "MAX_STEPS = 1 "),
            (REDTEAM / "patch_in_forward.py").read_text(),
        ]
    ):
        d = tmp_path / str(i)
        d.mkdir()
        f = d / "train.py"
        f.write_text(src)
        p, m, _ = run(f, d, mode)
        assert_result(p, m)
        assert (m["status"], m["val_bpb"]) == honest_one_step


@needs_bwrap
@pytest.mark.xdist_group("monkeypatch")  # beside the reference run
def test_a_compiled_scoring_forward_scores_the_same(honest_one_step, tmp_path):
    """The scoring's model processes compile the candidate's forward while it trains (a GPU preset's
    compile_scoring; here dynamo with its eager backend, which a test may ask for on the CPU): both
    report it, the scorer has them use it, and the number is honest.py's at the same step, to the bit
    (the eager backend runs the same kernels). Padding a short last batch is the unit tests' (tiny's
    rows fill every batch)."""
    f = tmp_path / "train.py"
    f.write_text((REDTEAM / "honest.py").read_text().replace("MAX_STEPS = 0 ", "MAX_STEPS = 1 "))
    p, m, _ = run(f, tmp_path, env={ENV_TEST_SCORING_BACKEND: "eager"})
    assert_result(p, m)
    assert m["eval_compiled"] is True and all(s > 0 for s in m["eval_compile_seconds"]), m
    assert (m["status"], m["val_bpb"]) == honest_one_step


# -- the clock ----------------------------------------------------------------------------------------


@needs_bwrap
@pytest.mark.parametrize("mode", MODES)
def test_real_batches_before_the_clock_are_training_time(prepared_tiny, tmp_path, mode):
    p, m, log = run(REDTEAM / "pre_clock_steps.py", tmp_path, mode)
    assert_result(p, m)
    assert m["status"] == "ok", m["error"]
    assert "PRECLOCK clock started: True" in log
    assert m["train_batches"] >= 8 and m["clock_start"] == "train.py"
    assert m["training_cpu_seconds"] <= TINY.budget_seconds + overrun_tolerance(TINY)


@needs_bwrap
@pytest.mark.parametrize("mode", MODES)
def test_training_past_the_budget_is_invalid(prepared_tiny, tmp_path, mode):
    p, m, _ = run(REDTEAM / "past_budget.py", tmp_path, mode)
    assert_result(p, m)
    assert m["status"] == "invalid" and "past the budget" in m["error"], m["error"]


@needs_bwrap
@pytest.mark.parametrize("mode", MODES)
def test_overrun_is_killed_at_budget_plus_grace(prepared_tiny, tmp_path, mode):
    p, m, _ = run(REDTEAM / "overrun.py", tmp_path, mode)
    assert_result(p, m)
    assert m["status"] == "timeout" and "budget + grace" in m["error"], m["error"]
    assert m["training_cpu_seconds"] >= TINY.budget_seconds + TINY.grace_seconds


def _cpu(log: str, tag: str, key: str) -> float:
    return float(re.search(rf"{tag} .*{key} ([0-9.]+)", log).group(1))


@needs_bwrap
@pytest.mark.parametrize("mode", MODES)
def test_a_thread_pool_started_before_the_clock_is_counted(prepared_tiny, tmp_path, mode):
    p, m, log = run(REDTEAM / "clock_threadpool.py", tmp_path, mode)
    assert_result(p, m)
    assert m["status"] == "ok", m["error"]
    main, pool = _cpu(log, "CPUTIME", "main"), _cpu(log, "CPUTIME", "pool")
    assert pool > 0.25 * TINY.budget_seconds  # the pool did work after the clock started ...
    assert main + pool <= m["training_cpu_seconds"] + 0.5  # ... and the harness counted it
    assert main < 0.8 * TINY.budget_seconds


@needs_bwrap
@pytest.mark.parametrize("mode", MODES)
def test_work_in_child_processes_is_counted(prepared_tiny, tmp_path, mode):
    p, m, log = run(REDTEAM / "clock_child.py", tmp_path, mode)
    assert_result(p, m)
    assert m["status"] == "ok", m["error"]
    if m["cpu_counter"] == "proc":
        pytest.xfail("the /proc counter cannot see children reaped by the kernel (SIGCHLD ignored)")
    assert _cpu(log, "CPUTIME", "main") < 0.8 * TINY.budget_seconds


@needs_bwrap
@pytest.mark.parametrize("mode", MODES)
def test_sleeping_while_a_child_works_is_counted(prepared_tiny, tmp_path, mode):
    p, m, log = run(REDTEAM / "clock_sleep_child.py", tmp_path, mode)
    assert_result(p, m)
    assert m["status"] == "ok", m["error"]
    child = float(re.search(r"CHILDCPU ([0-9.]+)", log).group(1))
    assert child <= m["training_cpu_seconds"] + 0.5
    assert (
        m["training_wall_seconds"] < TINY.budget_seconds * TINY.wall_multiple
    )  # never reached the wall deadline


# -- inputs and the fallback ---------------------------------------------------------------------------


def test_a_rewritten_train_bin_is_an_infra_error_naming_it(tmp_path, tmp_path_factory):
    from harness.data import prepare

    cache = tmp_path_factory.mktemp("own-cache")
    env = {"AUTORESEARCH_CACHE": str(cache)}
    old = os.environ.get("AUTORESEARCH_CACHE")
    os.environ["AUTORESEARCH_CACHE"] = str(cache)
    try:
        data = prepare(TINY, progress=False)
    finally:
        if old is not None:
            os.environ["AUTORESEARCH_CACHE"] = old
    with open(data.dir / "train.bin", "r+b") as f:
        f.seek(100)
        f.write(b"\x01\x02")
    p, m, _ = run(REDTEAM / "honest.py", tmp_path, env=env)
    assert p.returncode == 3 and m["status"] == "infra_error"
    assert "train.bin" in m["error"]


@pytest.mark.parametrize(
    "name, status", [("honest.py", "ok"), ("readval.py", "invalid"), ("outlive.py", "ok")]
)
def test_without_a_sandbox_the_run_works_and_says_so(prepared_tiny, tmp_path, name, status):
    marker = f"OUTLIVE{secrets.token_hex(6)}"
    p, m, log = run(adversary(name, tmp_path, MARKER=marker), tmp_path, env={ENV_FORCE_NONE: "1"})
    assert p.returncode == 0
    assert m["isolation"] == "none" and m["isolation_version"] is None
    assert p.stderr.count("isolation none") == 1 and "bubblewrap" in p.stderr
    assert m["status"] == status, m["error"]
    assert not alive_with(marker)


@needs_bwrap
def test_an_interpreter_under_tmp_stays_visible(tmp_path, monkeypatch):
    """The sandbox mounts a fresh /tmp; a checkout cloned under /tmp, with its .venv there, must still
    find its interpreter inside (the binds come on top of the tmpfs), and nothing else of the host's
    /tmp shows (a file beside the venv stays out of view)."""
    from harness import sandbox

    venv = tmp_path / "clone" / ".venv"  # tmp_path is under /tmp
    venv.mkdir(parents=True)
    (venv / "marker").write_text("the venv is here\n")
    (tmp_path / "clone" / "beside.txt").write_text("not for the candidate\n")
    real = sandbox.python_roots
    monkeypatch.setattr(sandbox, "python_roots", lambda: [*real(), str(venv)])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sb = sandbox.Sandbox(REPO / "harness", run_dir)
    scratch = sb.private_dir("scratch")
    argv, _, _ = sb.argv("harness.worker", scratch=scratch, ro_files={}, threads=1, cuda=False)
    beside = tmp_path / "clone" / "beside.txt"
    script = f"cat {venv}/marker; test -e {beside} && echo VISIBLE || echo hidden"
    p = subprocess.run(
        [*argv[: argv.index("--") + 1], "/bin/sh", "-c", script], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[:2] == ["the venv is here", "hidden"]
