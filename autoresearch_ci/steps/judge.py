"""Step 3, judge: verdicts, the forge's actions, and the record of it all.

    judge(cfg, state, results, forge, ledger) -> the records written

Runs with the write token. In order: the tick's baseline runs become a baseline record; every
candidate gets its verdict (verdict.for_candidate: the rule at the last look the train step made)
against the base's values on its seeds and the paired noise of baselines.py, and at most one keep
survives (verdict.one_winner); then each candidate, in turn, is acted on (the results comment, the
status, merge or archive), recorded in the ledger and logged in resources.md; last, the Summary of
resources.md and results.tsv are rewritten and the forge persists them.

A record whose forge action failed keeps its verdict and is acted on again by the next run of this
step; a record already written and acted on is left alone. A candidate an earlier tick left without a
result and this one trained again (carried_from) gets a new record in place of its infra-error one;
one still waiting for the guard command is left for a later tick (steps/settle.py).

On GitHub a keep whose runs had no sandbox (metrics "isolation": "none") is not merged unless
`[github] allow_unisolated_merge`: the verdict stands, and the PR stays open for a person, with the
reason in its comment and status (hold_reason).
"""

from __future__ import annotations

from collections.abc import Callable

from autoresearch_ci import baselines, verdict
from autoresearch_ci.config import Config
from autoresearch_ci.forge.base import Forge, ForgeError
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.noise import NoiseEstimate
from autoresearch_ci.records import (
    BaselineStats,
    Candidate,
    ExperimentRecord,
    RunOutcome,
    Verdict,
    sha256_text,
    utcnow,
)
from autoresearch_ci.report import pr, resources, tables
from autoresearch_ci.steps.state import PlannedCandidate, Progress, TickResults, TickState, quiet


def judge(
    cfg: Config,
    state: TickState,
    results: TickResults,
    forge: Forge,
    ledger: Ledger,
    summarizer: Callable[[str], str | None] | None = None,
    progress: Progress = quiet,
    gpu_usd_per_second: float = 0.0,
) -> list[ExperimentRecord]:
    ledger.recover()  # a torn last line from a killed writer goes to .corrupt (reported), not in our way
    done = {r.id: r for r in ledger.records()}
    written: list[ExperimentRecord] = []

    baseline_runs = results.for_experiment(state.tick_id, "baseline")
    if baseline_runs and state.tick_id not in done:
        rec = _baseline_record(state, baseline_runs, gpu_usd_per_second)
        ledger.append(rec)
        written.append(rec)
    records = ledger.records()
    base = baselines.current(
        records,
        state.base_commit,
        state.base_files,
        state.preset,
        state.runner,
        tick_id=state.tick_id,
        since=state.baseline_cutoff,
        new_runs=baseline_runs,
    )

    # Decide every candidate first, then act: only the best keep of the tick is merged. Each one's
    # noise is what the train step computed for it: the ledger before this tick and its own runs.
    pending = [c for c in state.candidates if c.guard_pending]  # no guard verdict: a later tick judges it
    state = state.model_copy(update={"candidates": [c for c in state.candidates if not c.guard_pending]})
    for c in pending:
        progress(f"{c.experiment_id}: the guard command has not run; left for the next tick")
    runs = {c.experiment_id: results.for_experiment(c.experiment_id) for c in state.candidates}
    decided = verdict.one_winner(
        [
            (
                c.experiment_id,
                verdict.for_candidate(
                    runs[c.experiment_id],
                    base,
                    _noise(records, base, runs[c.experiment_id], state.tick_id),
                    cfg.judge,
                    proposal_ok=c.proposal.ok,
                    guard_ok=c.guard_ok,
                    reasons=c.guard_reasons,
                ),
            )
            for c in state.candidates
        ]
    )

    text = forge.working_text(cfg.paths.resources)
    for c, v in zip(state.candidates, decided, strict=True):
        prior = done.get(c.experiment_id)
        if prior is not None and c.carried_from is not None and prior.tick != state.tick_id:
            prior = None  # an earlier tick's infra-error record: this tick's verdict replaces it
        if prior is not None and (not prior.forge_error or c.candidate is None):
            continue  # judged and acted on already
        # A record whose forge action failed is acted on again, with the verdict it recorded.
        rec = (
            prior.model_copy(update={"forge_error": None})
            if prior is not None
            else _record(state, c, v, runs[c.experiment_id], base, gpu_usd_per_second)
        )
        progress(f"{c.experiment_id}: {rec.verdict.decision}")
        if c.candidate is not None:
            try:
                _act(forge, c.candidate, rec, hold_reason(cfg, forge, rec))
            except ForgeError as exc:
                # The verdict stands and is recorded; the forge action can be redone by hand or by
                # the next run of this step (every forge action is idempotent).
                rec.forge_error = str(exc)
                progress(f"{c.experiment_id}: forge action failed: {exc}")
        if prior is not None and rec == prior:
            continue  # failed again the same way: nothing new to record
        ledger.append(rec)  # for a retried action: an update (the ledger keeps an id's last line)
        written.append(rec)
        # A kept candidate's runs become the new base's values on their seeds (baselines.py says why).
        write_entry = resources.replace_entry if c.carried_from is not None else resources.add_entry
        if (entry := write_entry(text, rec)) is not None:
            text = entry
            forge.write_files({cfg.paths.resources: text})

    if any(r.kind == "experiment" for r in written):
        experiments = ledger.experiments()
        summary = resources.condense_text(text, experiments, summarizer, every=cfg.learnings.condense_every)
        files = {cfg.paths.results_tsv: tables.results_tsv(experiments)}
        forge.write_files({cfg.paths.resources: summary, **files} if summary is not None else files)
    if written:  # a tick that judged no candidate (all waiting for the guard) has only its baseline
        tables_too = any(r.kind == "experiment" for r in written)
        forge.persist(
            [cfg.paths.ledger, *([cfg.paths.results_tsv, cfg.paths.resources] if tables_too else [])],
            pr.ledger_message(state.tick_id, len(written)),
        )
    return written


def _noise(records, base: BaselineStats | None, runs: list[RunOutcome], tick_id: str) -> NoiseEstimate:
    if base is None:
        return NoiseEstimate(sigma=0.0, dof=0, groups=0)
    return baselines.paired_noise(records, base, runs, tick_id=tick_id)


def _baseline_record(state: TickState, runs: list[RunOutcome], gpu_usd_per_second: float) -> ExperimentRecord:
    gpu = sum(o.wall_seconds for o in runs)
    return ExperimentRecord(
        id=state.tick_id,
        kind="baseline",
        tick=state.tick_id,
        parent_commit=state.base_commit,
        candidate_commit=state.base_commit,
        preset=state.preset,
        runner=state.runner,
        device=next((o.metrics.device for o in runs if o.metrics), None),
        seeds=[o.request.seed for o in runs],
        runs=runs,
        gpu_seconds=gpu,
        cost_usd=gpu * gpu_usd_per_second,
        harness_sha256=next((o.metrics.harness_sha256 for o in runs if o.metrics), None),
        hypothesis="baseline measurement",
        finished_at=utcnow(),
        actions_run_url=state.actions_run_url,
    )


def _record(
    state: TickState,
    c: PlannedCandidate,
    v: Verdict,
    runs: list[RunOutcome],
    base: BaselineStats | None,
    gpu_usd_per_second: float,
) -> ExperimentRecord:
    metrics = [o.metrics for o in runs if o.metrics is not None]
    gpu = sum(o.wall_seconds for o in runs)
    return ExperimentRecord(
        id=c.experiment_id,
        kind="experiment",
        tick=state.tick_id,
        finished_at=utcnow(),
        proposer=c.proposal.proposer,
        hypothesis=c.proposal.hypothesis,
        edit=c.proposal.edit,
        parent_commit=state.base_commit,
        candidate_commit=c.candidate.commit if c.candidate else None,
        branch=c.candidate.branch if c.candidate else None,
        pr_number=c.candidate.pr_number if c.candidate else None,
        pr_url=c.candidate.pr_url if c.candidate else None,
        actions_run_url=state.actions_run_url,
        patch=c.patch,
        patch_sha256=sha256_text(c.patch) if c.patch else None,
        preset=state.preset,
        runner=state.runner,
        device=metrics[0].device if metrics else None,
        seeds=[o.request.seed for o in runs],
        runs=runs,
        baseline=base,
        verdict=v,
        llm=c.proposal.usage,
        gpu_seconds=gpu,
        cost_usd=gpu * gpu_usd_per_second + c.proposal.usage.cost_usd,
        harness_sha256=metrics[0].harness_sha256 if metrics else None,
    )


def hold_reason(cfg: Config, forge: Forge, rec: ExperimentRecord) -> str | None:
    """Why a keep must wait for a person instead of being merged, or None. On GitHub (the loop that
    merges unattended) a result whose runs had no sandbox is held unless the config allows it."""
    if forge.name != "github" or cfg.github.allow_unisolated_merge or rec.verdict.decision != "keep":
        return None
    bare = [o for o in rec.runs if o.metrics is not None and o.metrics.isolation == "none"]
    if not bare:
        return None
    return (
        f"{len(bare)} of its runs had no sandbox (isolation: none: bubblewrap could not start), so "
        "nothing but in-process checks kept the candidate's code from the scorer. Not merged: review it "
        "and merge by hand, or set `[github] allow_unisolated_merge = true` in autoresearch.toml"
    )


def _act(forge: Forge, cand: Candidate, rec: ExperimentRecord, hold: str | None = None) -> None:
    """The forge action for a verdict. The comment and status come first, so a merge that fails still
    leaves the evidence on the PR; the ledger record is written by the caller either way."""
    v = rec.verdict
    rec.held = hold
    forge.comment(cand, pr.render_pr_comment(rec))
    state, description = pr.status(v)
    if hold:
        description = f"keep, held for review: no sandbox (isolation none); {v.reason}"
    forge.set_status(cand, state, description)
    if v.decision == "keep" and hold:
        return  # the verdict stands; a person merges it
    if v.decision == "keep":
        # "" means GitHub auto-merge is armed but has not merged yet: nothing to carry over then.
        rec.merged_commit = forge.merge(cand, pr.merge_message(rec)) or None
    elif v.decision != "infra-error":  # an infrastructure failure leaves the PR open for a re-run
        rec.archived_ref = forge.archive(cand)
