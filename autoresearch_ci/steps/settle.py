"""What a tick does before it proposes anything: settle what earlier ticks left, and know its own ids.

    tick_ids(forge, run_id)           -> TickIds   this tick's id and its candidates', from the run
    settle(cfg, forge, ledger, ids)   -> Settled   earlier candidates without a result: train or close
    resume_slot(cfg, forge, ids, eid) -> DONE | PlannedCandidate | None    a re-run's own candidates

No orphans. A candidate is left without a verdict when its tick's train or judge job died (cancelled,
timed out, a runner lost) or when its runs ended as infrastructure errors (the judge records those
and leaves the PR open). Each tick starts by looking at every open candidate of an earlier run:
- judged already (a verdict other than infra-error): nothing to do (a keep waiting for GitHub's
  auto-merge, or held for a person, stays as it is);
- otherwise it is trained again in this tick ("carried": the judge then replaces its infra-error
  record), at most `github.retrain_limit` times, each counted by a note on the PR;
- and past that limit, or when main's train.py changed since it was proposed (its baseline is gone),
  it is closed with its reason in a comment, an `error` status and a ledger record.

Re-runs. "Re-run jobs" in GitHub's UI runs a job again in the same Actions run. Ids derived from the
run (its id and creation time, the same for every attempt) make the re-run find what the first attempt
made: a slot whose candidate exists is taken up again instead of being proposed anew, and one the
ledger already records is skipped. So a re-run opens no second PR and writes no second record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pydantic import BaseModel, Field

from autoresearch_ci import guard
from autoresearch_ci.config import Config
from autoresearch_ci.forge.base import Forge, candidate_meta
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.records import (
    Candidate,
    ExperimentRecord,
    LLMUsage,
    Proposal,
    Verdict,
    new_experiment_id,
    sha256_text,
    utcnow,
)
from autoresearch_ci.report import pr, resources, tables
from autoresearch_ci.steps.state import PlannedCandidate, Progress, quiet

RETRAIN_NOTE = "retrain "  # a PR note per tick that trained the candidate again: "retrain <tick id>"
DONE = "done"  # resume_slot: the ledger already records this slot


@dataclass(frozen=True)
class TickIds:
    """A tick's id and its candidates'. In an Actions run they are derived from the run (creation time
    and id), so every attempt of a job computes the same ones; elsewhere they are fresh."""

    tick_id: str
    run_id: str | None = None
    stamp: str = ""

    def experiment_id(self, slot: int) -> str:
        if self.run_id is None:
            return new_experiment_id()
        return f"{self.stamp}-{_short(f'{self.run_id}:{slot}')}"


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def tick_ids(forge: Forge, run_id: str | None) -> TickIds:
    created = forge.run_created_at(run_id) if run_id else None
    if created is None:
        return TickIds(new_experiment_id())
    stamp = f"{created:%Y%m%d-%H%M%S}"
    return TickIds(f"{stamp}-{_short(f'{run_id}:tick')}", str(run_id), stamp)


class Settled(BaseModel):
    """What settle hands propose (carry.json): the tick id, and the candidates to train again."""

    tick_id: str
    carried: list[PlannedCandidate] = Field(default_factory=list)
    closed: list[str] = Field(default_factory=list)  # experiment ids closed, with a record


def candidate_meta_of(forge: Forge, cand: Candidate) -> dict:
    return candidate_meta(forge.message(cand.commit))


def planned_from_candidate(cfg: Config, forge: Forge, cand: Candidate, meta: dict) -> PlannedCandidate:
    """An open candidate as a tick plans it: its files from its commit, its proposal from the
    commit's Autoresearch-Meta trailer, and the diff guard applied again to what the commit changed."""
    base_files = {p: forge.read_file(cand.base_commit, p) for p in cfg.editable_files}
    files = {p: forge.read_file(cand.commit, p) for p in cfg.editable_files}
    changed = {p: t for p, t in files.items() if t != base_files.get(p)}
    title = forge.message(cand.commit).split("\n", 1)[0].removeprefix(pr.TITLE_PREFIX)
    proposal = Proposal(
        proposer=str(meta.get("proposer") or "unknown"),
        hypothesis=str(meta.get("hypothesis") or title),
        files=changed,
        parent_commit=cand.base_commit,
        usage=LLMUsage.model_validate(meta.get("usage") or {}),
    )
    verdict = guard.check(forge.changed_files(cand.base_commit, cand.commit), base_files, files, cfg)
    return PlannedCandidate(
        experiment_id=cand.experiment_id,
        proposal=proposal,
        patch=forge.diff(cand.base_commit, cand.commit),
        guard_ok=verdict.ok,
        guard_reasons=list(verdict.reasons),
        candidate=cand,
    )


def resume_slot(cfg: Config, forge: Forge, recorded: set[str], experiment_id: str):
    """A re-run's slot: DONE when the ledger records it, the candidate an earlier attempt opened,
    or None (nothing was made: propose it)."""
    if experiment_id in recorded:
        return DONE
    cand = forge.find_candidate(experiment_id)
    if cand is None:
        return None
    return planned_from_candidate(cfg, forge, cand, candidate_meta_of(forge, cand))


def settle(
    cfg: Config,
    forge: Forge,
    ledger: Ledger,
    ids: TickIds,
    *,
    progress: Progress = quiet,
    gpu_usd_per_second: float = 0.0,
) -> Settled:
    ledger.recover()
    records = {r.id: r for r in ledger.records()}
    out = Settled(tick_id=ids.tick_id)
    base = forge.base_commit()
    base_files = {p: forge.read_file(base, p) for p in cfg.editable_files}
    written: list[ExperimentRecord] = []
    text = forge.working_text(cfg.paths.resources)
    for cand in forge.open_candidates():
        meta = candidate_meta_of(forge, cand)
        if ids.run_id is not None and str(meta.get("run")) == ids.run_id:
            continue  # opened by an earlier attempt of this very run: propose takes it up (resume_slot)
        rec = records.get(cand.experiment_id)
        if rec is not None and rec.verdict is not None and rec.verdict.decision != "infra-error":
            continue  # judged: a keep waiting for auto-merge or for a person, or an action to redo by hand
        planned = planned_from_candidate(cfg, forge, cand, meta)
        tried = forge.note_keys(cand, RETRAIN_NOTE)
        key = RETRAIN_NOTE + ids.tick_id
        ticks = 1 + len([k for k in tried if k != key])
        last = (
            rec.verdict.reason if rec is not None and rec.verdict is not None else "its tick never judged it"
        )
        why = None
        if key not in tried and len(tried) >= cfg.github.retrain_limit:
            why = f"no result after {ticks} tick(s) (last: {last})"
        elif {p: forge.read_file(cand.base_commit, p) for p in cfg.editable_files} != base_files:
            why = "main's train.py changed since it was proposed, so its baseline is gone"
        if why is not None:
            progress(f"{cand.experiment_id}: closing: {why}")
            record = _closing_record(cfg, ids.tick_id, planned, meta, rec, why, gpu_usd_per_second)
            forge.comment(cand, pr.render_pr_comment(record))
            forge.set_status(cand, "error", f"closed: {why}")
            record.archived_ref = forge.archive(cand)
            ledger.append(record)
            written.append(record)
            out.closed.append(cand.experiment_id)
            if (entry := resources.replace_entry(text, record)) is not None:
                text = entry
                forge.write_files({cfg.paths.resources: text})
            continue
        progress(f"{cand.experiment_id}: no result yet ({last}): training it again")
        forge.note(
            cand,
            key,
            f"autoresearch-ci: no result yet ({last}); trained again in tick `{ids.tick_id}` "
            f"(attempt {ticks + 1} of at most {cfg.github.retrain_limit + 1}).",
        )
        planned.carried_from = (rec.tick if rec is not None else None) or str(meta.get("tick") or "") or None
        out.carried.append(planned)
    if written:
        forge.write_files({cfg.paths.results_tsv: tables.results_tsv(ledger.experiments())})
        forge.persist(
            [cfg.paths.ledger, cfg.paths.results_tsv, cfg.paths.resources],
            f"{pr.TITLE_PREFIX}settled {len(written)} candidate(s) left by earlier ticks",
        )
    return out


def _closing_record(
    cfg: Config,
    tick_id: str,
    c: PlannedCandidate,
    meta: dict,
    prior: ExperimentRecord | None,
    why: str,
    gpu_usd_per_second: float,
) -> ExperimentRecord:
    """The record of a candidate closed without a result: its earlier record's runs where it has one,
    and an infra-error verdict (never charged to the idea: it was not measured)."""
    runs = list(prior.runs) if prior is not None else []
    gpu = sum(o.wall_seconds for o in runs)
    cand = c.candidate
    return ExperimentRecord(
        id=c.experiment_id,
        kind="experiment",
        tick=prior.tick if prior is not None and prior.tick else tick_id,
        finished_at=utcnow(),
        proposer=c.proposal.proposer,
        hypothesis=c.proposal.hypothesis,
        parent_commit=cand.base_commit,
        candidate_commit=cand.commit,
        branch=cand.branch,
        pr_number=cand.pr_number,
        pr_url=cand.pr_url,
        actions_run_url=prior.actions_run_url if prior is not None else None,
        patch=c.patch,
        patch_sha256=sha256_text(c.patch) if c.patch else None,
        preset=str(meta.get("preset") or (prior.preset if prior else cfg.preset)),
        runner=str(meta.get("runner") or (prior.runner if prior else cfg.runner)),
        seeds=[o.request.seed for o in runs],
        runs=runs,
        baseline=prior.baseline if prior is not None else None,
        verdict=Verdict(decision="infra-error", reason=f"closed: {why}"),
        llm=c.proposal.usage,
        gpu_seconds=gpu,
        cost_usd=gpu * gpu_usd_per_second + c.proposal.usage.cost_usd,
    )
