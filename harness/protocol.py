"""The contract between the harness and whoever runs it, written once.

`python -m harness run` is started by the local runner, by a self-hosted GPU job and inside the Modal
function. All of them need the same few facts about it: what its exit codes mean, which statuses a
metrics.json can carry, which keys it always has, and how long a whole run may take before the
caller must assume the harness itself hung. They live here and nowhere else; this module imports
nothing heavy (no torch), so the Modal image and the runners can import it cheaply.
"""

from __future__ import annotations

# Exit codes of `python -m harness run`.
EXIT_RESULT = 0  # a result was produced, whatever its status: the candidate's own outcome
EXIT_USAGE = 2  # bad arguments (unknown preset, missing file): retrying the same command cannot help
EXIT_INFRA = 3  # the harness or the machine failed: retry, never charge the candidate

# What a metrics.json `status` can be. Every status but infra_error is the candidate's result.
STATUSES = ("ok", "crash", "timeout", "nan", "invalid", "infra_error")
CANDIDATE_FAILURES = ("crash", "timeout", "nan")  # the candidate's run failed (charged)

# Every metrics.json has at least these keys (None where a run did not get that far).
METRIC_KEYS = (
    "status", "val_bpb", "training_seconds", "total_seconds", "startup_seconds", "eval_seconds",
    "peak_memory_mb", "mfu_percent", "mfu_peak_flops", "mfu_peak_source", "num_steps", "num_params",
    "tokens_per_second", "train_tokens", "eval_tokens", "harness_sha256", "train_sha256",
    "data_fingerprint", "data_source", "preset", "seed", "device", "device_name", "torch_version",
    "python_version", "error", "log_tail",
    "isolation", "isolation_version", "clock", "cpu_counter", "training_cpu_seconds", "training_wall_seconds",
)  # fmt: skip

# What `isolation` can be: "bwrap" (the candidate ran in bubblewrap sandboxes, the scorer outside
# them) or "none" (plain processes and the in-process checks only: the harness could not create
# namespaces here). A loop should not auto-merge an "isolation: none" result unless told to.
ISOLATIONS = ("bwrap", "none")


# Seconds the harness itself may spend around the deadlines below: hashing the inputs, starting and
# killing sandboxes, writing metrics.
HARNESS_OVERHEAD_S = 60.0


def hard_deadline_seconds(preset_name: str) -> float:
    """The longest a whole harness run can last, in wall-clock seconds, by the harness's own
    deadlines: start-up allowance, the training phase's wall deadline (budget x wall_multiple on a
    CPU-time clock, budget + grace on the wall clock), evaluation, and the harness's own overhead.
    A caller adds its own margin and treats a harness still running after that as hung: an
    infrastructure failure."""
    from harness.presets import get_preset

    p = get_preset(preset_name)
    return (p.startup_allowance_seconds + training_wall_deadline_seconds(p) + p.eval_timeout_seconds
            + HARNESS_OVERHEAD_S)  # fmt: skip


def training_wall_deadline_seconds(preset) -> float:
    """Wall seconds from clock start after which training is killed (timeout), whatever its clock."""
    if preset.clock == "cpu":
        return preset.budget_seconds * preset.wall_multiple + preset.grace_seconds
    return preset.budget_seconds + preset.grace_seconds


def state_root(environ=None) -> str:
    """Where the harness keeps what its trusted processes write between runs (the bytecode below, the
    compile cache: harness/compile_cache.py): `AUTORESEARCH_STATE`, else the data cache's root
    (`AUTORESEARCH_CACHE`, default ~/.cache/autoresearch-ci). Apart from the data so that the data can
    be mounted read-only where candidates run (the Modal app does) while this stays writable."""
    import os

    env = os.environ if environ is None else environ
    state = env.get("AUTORESEARCH_STATE")
    return os.path.abspath(os.path.expanduser(state)) if state else cache_root_dir(env)


def cache_root_dir(environ=None) -> str:
    """The data cache's root: `AUTORESEARCH_CACHE`, else $XDG_CACHE_HOME (or ~/.cache)/autoresearch-ci."""
    import os

    env = os.environ if environ is None else environ
    home = env.get("HOME") or os.path.expanduser("~")
    root = env.get("AUTORESEARCH_CACHE") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "autoresearch-ci"
    )
    return os.path.abspath(os.path.expanduser(root))


def trusted_pycache_dir(environ=None) -> str:
    """Where trusted harness processes keep bytecode: `PYTHONPYCACHEPREFIX` for `python -m harness`.

    With a prefix set, Python never reads or writes a `__pycache__` beside a source file, so a .pyc
    planted in harness/__pycache__ is never run. This directory lives in the harness's own cache
    (never in any sandbox's view as writable: sandboxes read it, see harness/sandbox.py), so it stays
    warm between runs: torch's thousands of modules compile once, not in every process. A caller
    that starts the harness sets PYTHONPYCACHEPREFIX to it, which also covers harness/__init__.py and
    __main__.py; `python -m harness` run by hand re-executes itself with it. `environ`: the
    environment the harness will run with (default: this process's)."""
    import os
    import sys

    tag = sys.implementation.cache_tag or "python"
    return os.path.join(state_root(environ), "pycache", tag)


def exit_reason(returncode: int | None, *, timed_out: bool = False, seconds: float = 0.0) -> str:
    """Why a harness run that did not produce a result failed, in one line (for infra_error)."""
    if timed_out:
        return f"the harness hung: killed after {seconds:.0f} s (hard timeout)"
    if returncode == EXIT_USAGE:
        return "the harness rejected its arguments (exit 2)"
    if returncode == EXIT_INFRA:
        return "the harness reported an infrastructure failure (exit 3)"
    if returncode == EXIT_RESULT:
        return "the harness exited 0 but wrote no readable metrics file"
    if returncode is not None and returncode < 0:
        return f"the harness was killed by signal {-returncode}"
    return f"the harness exited {returncode}"
