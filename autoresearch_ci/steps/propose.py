"""Step 1, propose: proposals -> guarded candidates (branches, and PRs where the forge has them).

    propose(cfg, forge, proposer, ledger, runner_name) -> TickState

Runs where the LLM key is. It plans what the first round must measure of the base and from when on
a baseline run counts as fresh (baselines.plan; the train step adds the base's seeds that later
rounds pair on), asks the proposer for each candidate, and lets only what passes the guard become a
candidate: first on the proposal's own files, then on what the forge's commit really changed, then
the optional guard command in a throwaway checkout the forge provides.
"""

from __future__ import annotations

import difflib

from autoresearch_ci import baselines, guard
from autoresearch_ci.backends import actions_run_url
from autoresearch_ci.config import Config
from autoresearch_ci.forge.base import Forge
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.proposers.base import ProposalContext, Proposer
from autoresearch_ci.records import new_experiment_id
from autoresearch_ci.report import pr
from autoresearch_ci.steps.state import PlannedCandidate, Progress, TickState, quiet


def propose(
    cfg: Config,
    forge: Forge,
    proposer: Proposer,
    ledger: Ledger,
    runner_name: str,
    candidates: int | None = None,
    seed: int = 0,
    progress: Progress = quiet,
) -> TickState:
    ledger.recover()
    records = ledger.records()
    base = forge.base_commit()
    base_files = {p: forge.read_file(base, p) for p in cfg.editable_files}
    seeds, since = baselines.plan(records, base, base_files, cfg.preset, runner_name, cfg.judge)
    state = TickState(
        tick_id=new_experiment_id(),
        base_commit=base,
        preset=cfg.preset,
        runner=runner_name,
        forge=forge.name,
        base_files=base_files,
        baseline_seeds_needed=seeds,
        baseline_cutoff=since,
        actions_run_url=actions_run_url(),
    )
    program = forge.read_file(base, cfg.paths.program)
    resources = forge.read_file(base, cfg.paths.resources)
    # Every experiment, not a window: the offline proposer must never repeat an edit tried long ago,
    # and the LLM proposer trims what it shows to the model itself.
    recent = [r for r in records if r.kind == "experiment"]
    for k in range(candidates or cfg.candidates_per_tick):
        progress(f"proposing candidate {k + 1}")
        ctx = ProposalContext(
            program_md=program,
            resources_md=resources,
            files=base_files,
            parent_commit=base,
            recent=recent,
            siblings=[c.proposal for c in state.candidates if c.proposal.ok],
            seed=seed * 1000 + k,
        )
        planned = PlannedCandidate(experiment_id=new_experiment_id(), proposal=proposer.propose(ctx))
        state.candidates.append(planned)
        _make_candidate(cfg, forge, state, planned)
    return state


def _make_candidate(cfg: Config, forge: Forge, state: TickState, planned: PlannedCandidate) -> None:
    """Guard the proposal, open it as a candidate on the forge, and guard what the forge made."""
    proposal, base, base_files = planned.proposal, state.base_commit, state.base_files
    if not proposal.ok:
        planned.guard_reasons = [f"proposal failed: {proposal.error}"]
        return
    new_files = {**base_files, **proposal.files}
    changed = sorted(p for p in set(proposal.files) if proposal.files[p] != base_files.get(p))
    verdict = guard.check(changed, base_files, new_files, cfg)
    planned.guard_ok, planned.guard_reasons = verdict.ok, list(verdict.reasons)
    if not verdict.ok:
        planned.patch = _text_patch(base_files, new_files)
        return
    cand = forge.open_candidate(
        planned.experiment_id,
        base,
        {p: new_files[p] for p in changed},
        title=pr.title(proposal),
        body=pr.body(planned.experiment_id, proposal, cfg.preset),
    )
    planned.candidate = cand
    planned.patch = forge.diff(base, cand.commit)
    # The forge's own view of the commit is what counts: it must touch only editable files.
    verdict = guard.check(forge.changed_files(base, cand.commit), base_files, new_files, cfg)
    ok, tail = _guard_command(cfg, forge, cand.commit) if verdict.ok else (False, "")
    planned.guard_ok = verdict.ok and ok
    planned.guard_reasons = list(verdict.reasons) + ([] if ok else [f"guard command failed: {tail[-500:]}"])
    forge.set_status(
        cand,
        "pending" if planned.guard_ok else "failure",
        pr.QUEUED if planned.guard_ok else pr.REJECTED,
    )


def _guard_command(cfg: Config, forge: Forge, commit: str) -> tuple[bool, str]:
    """The optional guard command (tests, lint), in a throwaway checkout of the candidate."""
    if not cfg.guard_command:
        return True, ""
    with forge.worktree(commit) as checkout:
        return guard.run_guard_command(cfg.guard_command, checkout, cfg.guard_timeout_seconds)


def _text_patch(old: dict[str, str], new: dict[str, str]) -> str:
    """The patch of a proposal that never became a commit (the guard rejected it), for the record."""
    out = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path, ""), new.get(path, "")
        if a != b:
            out.extend(difflib.unified_diff(a.splitlines(True), b.splitlines(True), f"a/{path}", f"b/{path}"))
    return "".join(out)
