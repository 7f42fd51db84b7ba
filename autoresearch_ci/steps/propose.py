"""Step 1, propose: proposals -> guarded candidates (branches, and PRs where the forge has them).

    propose(cfg, forge, proposer, ledger, runner_name) -> TickState

Runs where the LLM key is. It plans what the first round must measure of the base and from when on
a baseline run counts as fresh (baselines.plan; the train step adds the base's seeds that later
rounds pair on), asks the proposer for each candidate, and lets only what passes the guard become a
candidate: first on the proposal's own files, then on what the forge's commit really changed, then
the optional guard command in a throwaway checkout the forge provides; or, with defer_guard_command
(CI: this job holds the LLM key and a write token), the command is left to a job that holds neither
(steps/guard.py) and the candidate waits for it (guard_pending).

Earlier ticks' candidates that settle.py carries come first and take slots of the tick; with ids
derived from the Actions run (settle.TickIds), a slot a previous attempt of this job already filled
is taken up again (settle.resume_slot) rather than proposed anew.
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
from autoresearch_ci.steps.settle import DONE, TickIds, resume_slot
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
    *,
    ids: TickIds | None = None,
    carried: list[PlannedCandidate] | tuple = (),
    defer_guard_command: bool = False,
) -> TickState:
    ids = ids or TickIds(new_experiment_id())
    ledger.recover()
    records = ledger.records()
    base = forge.base_commit()
    base_files = {p: forge.read_file(base, p) for p in cfg.editable_files}
    seeds, since = baselines.plan(records, base, base_files, cfg.preset, runner_name, cfg.judge)
    state = TickState(
        tick_id=ids.tick_id,
        run_id=ids.run_id,
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
    recorded = {r.id for r in records}
    for planned in carried:  # earlier ticks' candidates without a result, trained again
        state.candidates.append(planned)
        _guard_commit(cfg, forge, state, planned, defer_guard_command)
    for k in range(max(0, (candidates or cfg.candidates_per_tick) - len(carried))):
        eid = ids.experiment_id(k)
        if ids.run_id is not None and (again := resume_slot(cfg, forge, recorded, eid)) is not None:
            if again != DONE:  # an earlier attempt of this job opened it: take it up, no new PR
                state.candidates.append(again)
                _guard_commit(cfg, forge, state, again, defer_guard_command)
            continue
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
        planned = PlannedCandidate(experiment_id=eid, proposal=proposer.propose(ctx))
        state.candidates.append(planned)
        _make_candidate(cfg, forge, state, planned, slot=k, defer_guard_command=defer_guard_command)
    return state


def _make_candidate(
    cfg: Config,
    forge: Forge,
    state: TickState,
    planned: PlannedCandidate,
    slot: int = 0,
    defer_guard_command: bool = False,
) -> None:
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
    meta = {
        "tick": state.tick_id,
        "run": state.run_id,
        "slot": slot,
        "proposer": proposal.proposer,
        "hypothesis": proposal.hypothesis,
        "usage": proposal.usage.model_dump(),
        "preset": state.preset,
        "runner": state.runner,
    }
    cand = forge.open_candidate(
        planned.experiment_id,
        base,
        {p: new_files[p] for p in changed},
        title=pr.title(proposal),
        body=pr.body(planned.experiment_id, proposal, cfg.preset),
        meta=meta,
    )
    planned.candidate = cand
    planned.patch = forge.diff(base, cand.commit)
    # The forge's own view of the commit is what counts: it must touch only editable files.
    verdict = guard.check(forge.changed_files(base, cand.commit), base_files, new_files, cfg)
    planned.guard_ok, planned.guard_reasons = verdict.ok, list(verdict.reasons)
    _guard_commit(cfg, forge, state, planned, defer_guard_command)


def _guard_commit(
    cfg: Config, forge: Forge, state: TickState, planned: PlannedCandidate, defer: bool
) -> None:
    """The guard command on a candidate the diff guard let through (here, or deferred to a job
    without secrets), and the status that says where it stands."""
    cand = planned.candidate
    if planned.guard_ok and cfg.guard_command and defer:
        planned.guard_pending = True
    elif planned.guard_ok:
        ok, tail = _guard_command(cfg, forge, cand.commit)
        planned.guard_ok = ok
        planned.guard_reasons += [] if ok else [f"guard command failed: {tail[-500:]}"]
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
