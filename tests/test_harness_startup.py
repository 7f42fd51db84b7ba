"""Tests of what the harness does for a fast start-up on the GPU, all runnable on a CPU machine.

The start-up phases and torch.compile statistics the supervisor records (informational, forged
values dropped), and the sandbox's parallel compile: a writable private /dev/shm and a compile pool
on CUDA only. (The trusted bytecode warm-up, harness/bytecode.py, has tests/test_bytecode.py.) The
seconds themselves are measured on the GPU machine (benchmarks/README.md), never here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.sandbox import compile_threads, descendants, probe, proc_table
from harness.supervisor import Marks, compile_stats, startup_phases

REPO = Path(__file__).resolve().parents[1]
needs_bwrap = pytest.mark.skipif(probe()[0] != "bwrap", reason=f"no sandbox here: {probe()[1]}")


def test_train_py_may_not_import_the_bytecode_module():
    from harness.integrity import static_scan

    assert static_scan("import harness.bytecode\n") and static_scan("from harness import bytecode\n")


# -- what the supervisor records ----------------------------------------------------------------------


def test_startup_phases_keep_only_marks_in_order():
    ready = {"times": {"entry": 10.5, "torch": 12.0, "spec": 12.125, "compiler": 13.0, "device": 13.25}}
    got = startup_phases(9.0, 10.0, ready, 13.5, 20.0)
    assert got == {"harness_s": 1.0, "sandbox_to_python_s": 0.5, "torch_import_s": 1.5, "spec_wait_s": 0.125,
                   "compiler_import_s": 0.875, "device_init_s": 0.25, "worker_rest_s": 0.25,
                   "train_py_s": 6.5}  # fmt: skip
    forged = {"times": {"entry": 10.5, "torch": 99.0, "compiler": "soon", "device": 11.0}}
    got = startup_phases(9.0, 10.0, forged, 13.5, None)  # a mark after ready: it and the rest dropped
    assert got == {"harness_s": 1.0, "sandbox_to_python_s": 0.5, "worker_rest_s": 3.0}
    assert startup_phases(9.0, 10.0, None, None, None) == {"harness_s": 1.0}  # the worker never got ready


def test_marks_record_the_time_from_each_mark_to_the_next():
    now = iter([10.5, 10.75, 12.0])
    phases: dict = {}
    mark = Marks(phases, start=10.0, clock=lambda: next(now))
    mark("reap_s")
    mark("weights_s")
    mark("score_s")
    assert phases == {"reap_s": 0.5, "weights_s": 0.25, "score_s": 1.25}


def test_compile_stats_keep_small_numbers_of_the_right_kind():
    msg = {"c": {"fxgraph_cache_hit": 6, "x" * 100: 1, "neg": -1, "big": 10**9, "flag": True, "f": 1.5}}
    assert compile_stats(msg, "c", int) == {"fxgraph_cache_hit": 6, "x" * 60: 1}
    assert compile_stats({"t": {"inductor": 2.5, "n": 3}}, "t", float) == {"inductor": 2.5}
    assert compile_stats({"c": "lots"}, "c", int) == {} and compile_stats({}, "c", int) == {}


# -- parallel compile in the sandbox ------------------------------------------------------------------


def test_compile_threads_only_on_cuda():
    assert compile_threads(False) == 1
    assert 1 <= compile_threads(True) <= 32


def test_a_model_process_gets_a_share_of_the_compile_workers(tmp_path):
    """The scoring's model processes compile beside the candidate's training: each gets a quarter of
    the workers a training sandbox gets (never fewer than one)."""
    from harness import sandbox
    from harness.scorer import MODEL_COMPILE_SHARE

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sb = sandbox.Sandbox(REPO / "harness", run_dir, isolation="none")
    scratch = sb.private_dir("scratch")

    def workers(share: int) -> int:
        _, env, _ = sb.argv("harness.modelproc", scratch=scratch, ro_files={}, threads=1, cuda=True,
                            compile_share=share)  # fmt: skip
        return int(env["TORCHINDUCTOR_COMPILE_THREADS"])

    assert workers(1) == compile_threads(True)
    assert workers(MODEL_COMPILE_SHARE) == max(1, compile_threads(True) // MODEL_COMPILE_SHARE)
    assert workers(10_000) == 1


def test_the_cuda_jit_cache_lives_in_the_kept_compile_cache(tmp_path):
    """The CUDA driver's cache of what it compiled from PTX (torch's flash attention on an H200: 1.7 s
    of a first forward and backward without it, 0.15 s with it) is under the sandbox's .cache, the
    directory harness/compile_cache.py keeps and seeds, never in $HOME/.nv, which dies with the run."""
    from harness import compile_cache, sandbox

    env = sandbox.sandbox_env("/scratch", 1)
    kept = f"{env['HOME']}/{compile_cache.SUBDIR}/"
    assert env["CUDA_CACHE_PATH"].startswith(kept)
    assert env["XDG_CACHE_HOME"] + "/" == kept
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sb = sandbox.Sandbox(REPO / "harness", run_dir, isolation="none")
    scratch = sb.private_dir("scratch")
    _, env, _ = sb.argv("harness.worker", scratch=scratch, ro_files={}, threads=1, cuda=True)
    assert env["CUDA_CACHE_PATH"] == f"{scratch}/{compile_cache.SUBDIR}/nv"


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_warm_compiler_imports_the_compiler_and_starts_a_pool_only_where_inductor_would(monkeypatch):
    """The worker's early compiler import on CUDA (warm_compiler) runs against the installed torch:
    afterwards the compiler's entry point is imported, and where inductor would use no pool (one
    compile thread, or no triton: this CPU machine) none was started."""
    from harness.worker import warm_compiler

    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")
    before = descendants(proc_table(live_only=True), os.getpid())
    warm_compiler()
    assert "torch._inductor.compile_fx" in sys.modules
    assert descendants(proc_table(live_only=True), os.getpid()) == before


SEMAPHORE = "import multiprocessing as mp, os; mp.Lock(); print(os.environ['TORCHINDUCTOR_COMPILE_THREADS'])"


@needs_bwrap
@pytest.mark.parametrize("cuda", [True, False])
def test_a_cuda_sandbox_has_a_private_writable_dev_shm(tmp_path, cuda):
    """A multiprocessing pool (inductor's parallel compile) needs POSIX semaphores in /dev/shm, which
    bwrap's /dev leaves writable by root only: a CUDA sandbox gets a private tmpfs there and its
    compile pool; a CPU one keeps one compile thread."""
    from harness import sandbox

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    os.chmod(run_dir, 0o711)
    sb = sandbox.Sandbox(REPO / "harness", run_dir)
    scratch = sb.private_dir("scratch")
    argv, env, _ = sb.argv("harness.worker", scratch=scratch, ro_files={}, threads=1, cuda=cuda)
    marker = f"/dev/shm/autoresearch-test-{os.getpid()}-{int(cuda)}"
    inside = (
        "from harness.sandbox import drop_privileges; drop_privileges(); "
        + f"open({marker!r}, 'w').close(); "
        + SEMAPHORE
    )
    p = subprocess.run([*argv[: argv.index("-m")], "-c", inside], capture_output=True, text=True)
    if cuda and sandbox.shm_args():
        assert p.returncode == 0, p.stderr
        assert int(p.stdout.strip()) == compile_threads(True)
        assert not os.path.exists(marker)  # private to the sandbox: nothing reaches the host's /dev/shm
    else:
        assert "PermissionError" in p.stderr  # no pool without it: the compile stays in one thread
        assert "--setenv TORCHINDUCTOR_COMPILE_THREADS 1" in " ".join(argv)
