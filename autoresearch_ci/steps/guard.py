"""The guard command, where a candidate's code may run: a job with no secret and no write token.

    run_guard_commands(cfg, state, checkout) -> GuardResults        guard.json

The optional `guard_command` (tests, lint) imports and runs the candidate's train.py, so in CI it
cannot run in the propose job, which holds the LLM key and a token that can push and merge. That
job marks each candidate `guard_pending` (propose.py), and this step, in a job of its own
(`contents: read`, no secret, credentials not kept in the checkout, the sandbox made available),
runs the command in a throwaway work tree of each: the tick's base commit with the candidate's
files written over it, which is what the candidate's commit holds (the diff guard checked that the
commit changes nothing else). Train and judge take guard.json in (TickState.apply_guard).
"""

from __future__ import annotations

from pathlib import Path

from autoresearch_ci import guard
from autoresearch_ci.config import Config
from autoresearch_ci.files import write_atomically
from autoresearch_ci.forge.git import Git
from autoresearch_ci.steps.state import GuardOutcome, GuardResults, Progress, TickState, quiet


def run_guard_commands(
    cfg: Config, state: TickState, checkout: Path, progress: Progress = quiet
) -> GuardResults:
    results = GuardResults(tick_id=state.tick_id)
    git = Git(checkout)
    for c in state.candidates:
        if not c.guard_pending:
            continue
        if not cfg.guard_command:  # nothing to run (the config changed since propose): it passes
            results.results[c.experiment_id] = GuardOutcome(ok=True)
            continue
        progress(f"{c.experiment_id}: guard command")
        with git.worktree(state.base_commit) as wt:
            for path, text in c.proposal.files.items():
                write_atomically(wt / path, text)
            ok, tail = guard.run_guard_command(cfg.guard_command, wt, cfg.guard_timeout_seconds)
        results.results[c.experiment_id] = GuardOutcome(ok=ok, tail=tail[-4000:])
        progress(f"{c.experiment_id}: guard command {'passed' if ok else 'failed'}")
    return results
