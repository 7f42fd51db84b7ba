"""Step 2, train: the tick's baseline runs and candidates, then a confirmation of each marginal win.

    train(cfg, state, runner, ledger) -> TickResults

Runs where the GPU is, with no other secret. Seeds are fixed per role, so a candidate run is paired
with the first baseline run (same data order, same initialisation) and a confirmation is a genuinely
new draw.
"""

from __future__ import annotations

from autoresearch_ci import baselines, verdict
from autoresearch_ci.config import Config
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.records import RunRequest
from autoresearch_ci.runners.base import Runner
from autoresearch_ci.steps.state import Progress, TickResults, TickState, quiet

CANDIDATE_SEED = 0
CONFIRMATION_SEED_BASE = 1000


def _request(
    state: TickState, exp_id: str, role: str, commit: str, files: dict[str, str], seed: int
) -> RunRequest:
    return RunRequest(
        experiment_id=exp_id,
        role=role,
        commit=commit,
        train_py=files["train.py"],
        preset=state.preset,
        seed=seed,
    )


def train(
    cfg: Config, state: TickState, runner: Runner, ledger: Ledger, progress: Progress = quiet
) -> TickResults:
    results = TickResults(tick_id=state.tick_id)
    first: list[RunRequest] = [
        _request(state, state.tick_id, "baseline", state.base_commit, state.base_files, s)
        for s in state.baseline_seeds_needed
    ]
    for c in state.runnable():
        files = {**state.base_files, **c.proposal.files}
        first.append(_request(state, c.experiment_id, "candidate", c.candidate.commit, files, CANDIDATE_SEED))
    if not first:
        return results
    progress(f"training {len(first)} run(s) on {runner.name}")
    results.outcomes.extend(runner.run_many(first))

    # Marginal wins get a confirmation run with a new seed before the judge may keep them.
    records = ledger.records()
    base = baselines.current(
        records,
        state.base_commit,
        state.base_files,
        state.preset,
        state.runner,
        tick_id=state.tick_id,
        fresh=state.baseline_fresh,
        new_runs=results.for_experiment(state.tick_id),
    )
    if base is None:
        return results
    noise = baselines.noise(records, state.base_files, state.preset, state.runner, base)
    confirm: list[RunRequest] = []
    for c in state.runnable():
        outcome = verdict.decide(results.for_experiment(c.experiment_id), base, noise, cfg.judge)
        if isinstance(outcome, verdict.NeedConfirmation):
            files = {**state.base_files, **c.proposal.files}
            confirm.append(
                _request(
                    state, c.experiment_id, "confirmation", c.candidate.commit, files, CONFIRMATION_SEED_BASE
                )
            )
    if confirm:
        progress(f"confirming {len(confirm)} marginal win(s) with a new seed")
        results.outcomes.extend(runner.run_many(confirm))
    return results
