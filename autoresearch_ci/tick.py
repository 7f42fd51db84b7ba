"""One tick of the research loop, as three steps that can run in one process or in three CI jobs.

    propose(cfg, forge, proposer, ledger)          -> TickState    (needs the LLM key, pushes branches)
    train(cfg, state, runner, ledger)               -> TickResults  (needs the GPU, no other secret)
    judge(cfg, state, results, forge, ledger, ...)  -> records      (needs the write token)

The state between steps is plain JSON (tick.json, results.json) so CI can hand it from job to job
as artifacts. Every step is idempotent: a record already in the ledger is not appended again, a
candidate already merged is not merged again, so a tick that died half-way can simply run again.

Nothing is lost: a failed proposal, a guard rejection, a crash and an infrastructure failure each
end as a ledger record with its reason, and a discarded candidate's commit stays reachable.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from autoresearch_ci import guard as guard_mod
from autoresearch_ci import judge as judge_mod
from autoresearch_ci import learnings
from autoresearch_ci.config import Config
from autoresearch_ci.forge.base import Forge
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.proposers.base import ProposalContext, Proposer
from autoresearch_ci.records import (
    BaselineStats,
    Candidate,
    ExperimentRecord,
    LLMUsage,
    Proposal,
    RunOutcome,
    RunRequest,
    Verdict,
    new_experiment_id,
    sha256_text,
    utcnow,
)
from autoresearch_ci.runners.base import Runner

# Seeds are fixed per role so a candidate run is paired with the first baseline run (same data order,
# same initialisation) and a confirmation is a genuinely new draw.
CANDIDATE_SEED = 0
CONFIRMATION_SEED_BASE = 1000

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


class PlannedCandidate(BaseModel):
    experiment_id: str
    proposal: Proposal
    patch: str = ""
    guard_ok: bool = False
    guard_reasons: list[str] = Field(default_factory=list)
    candidate: Candidate | None = None


class TickState(BaseModel):
    tick_id: str
    base_commit: str
    preset: str
    runner: str
    forge: str
    base_files: dict[str, str]
    baseline_seeds_needed: list[int] = Field(default_factory=list)
    candidates: list[PlannedCandidate] = Field(default_factory=list)
    actions_run_url: str | None = None

    def runnable(self) -> list[PlannedCandidate]:
        return [c for c in self.candidates if c.guard_ok and c.candidate is not None]


class TickResults(BaseModel):
    tick_id: str
    outcomes: list[RunOutcome] = Field(default_factory=list)

    def for_experiment(self, experiment_id: str, role: str | None = None) -> list[RunOutcome]:
        return [
            o
            for o in self.outcomes
            if o.request.experiment_id == experiment_id and (role is None or o.request.role == role)
        ]


def actions_run_url() -> str | None:
    """The Actions run that is executing this step, when there is one (for provenance links)."""
    server, repo, run = (os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID"))
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None


# ----------------------------------------------------------------------------------------------
# baseline bookkeeping


def baseline_values(ledger: Ledger, commit: str, preset: str, runner: str) -> tuple[list[float], list[int], list[str]]:
    values, seeds, ids = [], [], []
    for rec in ledger.baselines_for(commit, preset, runner):
        for o in rec.runs:
            m = o.metrics
            if m is not None and m.status == "ok" and m.val_bpb is not None:
                values.append(m.val_bpb)
                seeds.append(o.request.seed)
        ids.append(rec.id)
    return values, seeds, ids


def baseline_stats(ledger: Ledger, commit: str, preset: str, runner: str, extra: list[RunOutcome] = ()) -> BaselineStats | None:
    values, seeds, ids = baseline_values(ledger, commit, preset, runner)
    for o in extra:
        if o.metrics is not None and o.metrics.status == "ok" and o.metrics.val_bpb is not None:
            values.append(o.metrics.val_bpb)
            seeds.append(o.request.seed)
    if not values:
        return None
    device = None
    for o in extra:
        device = device or (o.metrics.device if o.metrics else None)
    return BaselineStats(
        commit=commit,
        preset=preset,
        runner=runner,
        device=device,
        values=values,
        seeds=seeds,
        mean=statistics.fmean(values),
        std=statistics.stdev(values) if len(values) > 1 else 0.0,
        record_ids=ids,
    )


def noise_for(ledger: Ledger, preset: str, runner: str, current: BaselineStats | None) -> float:
    """Pooled spread of every baseline measured on this preset and runner, this tick's included."""
    groups: dict[str, list[float]] = {}
    for rec in ledger.records():
        if rec.kind == "baseline" and rec.preset == preset and rec.runner == runner:
            groups.setdefault(rec.parent_commit, []).extend(rec.ok_values())
    if current is not None:
        groups[current.commit] = list(current.values)
    return judge_mod.noise_estimate(list(groups.values()))


def seeds_needed(cfg: Config, ledger: Ledger, commit: str, runner: str) -> list[int]:
    values, seeds, _ = baseline_values(ledger, commit, cfg.preset, runner)
    if len(values) >= cfg.judge.baseline_seeds and not judge_mod.baseline_is_stale(ledger, commit, cfg):
        return []
    have = set(seeds)
    want = cfg.judge.baseline_seeds if len(values) < cfg.judge.baseline_seeds else len(values) + 1
    out, s = [], 0
    while len(out) + len(have) < want:
        if s not in have:
            out.append(s)
        s += 1
    return out or [max(have) + 1]


# ----------------------------------------------------------------------------------------------
# step 1: propose


def _run_guard_command(cfg: Config, forge_repo: Path | None, commit: str) -> tuple[bool, str]:
    """The optional guard command (tests, lint) runs in a throwaway worktree of the candidate."""
    if not cfg.guard_command:
        return True, ""
    if forge_repo is None:
        return False, "guard_command is set but the forge has no local checkout to run it in"
    with tempfile.TemporaryDirectory(prefix="autoresearch-guard-") as tmp:
        wt = Path(tmp) / "wt"
        subprocess.run(
            ["git", "-C", str(forge_repo), "worktree", "add", "--detach", str(wt), commit],
            check=True, capture_output=True, timeout=120,
        )
        try:
            return guard_mod.run_guard_command(cfg.guard_command, wt, cfg.guard_timeout_seconds)
        finally:
            subprocess.run(["git", "-C", str(forge_repo), "worktree", "remove", "--force", str(wt)],
                           capture_output=True, timeout=120)


def propose(
    cfg: Config,
    forge: Forge,
    proposer: Proposer,
    ledger: Ledger,
    runner_name: str,
    candidates: int | None = None,
    seed: int = 0,
    progress: Progress = _quiet,
    forge_repo: Path | None = None,
) -> TickState:
    base = forge.base_commit()
    base_files = {p: forge.read_file(base, p) for p in cfg.editable_files}
    state = TickState(
        tick_id=new_experiment_id(),
        base_commit=base,
        preset=cfg.preset,
        runner=runner_name,
        forge=forge.name,
        base_files=base_files,
        baseline_seeds_needed=seeds_needed(cfg, ledger, base, runner_name),
        actions_run_url=actions_run_url(),
    )
    program = forge.read_file(base, cfg.paths.program)
    resources = forge.read_file(base, cfg.paths.resources)
    recent = ledger.recent(40)
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
        proposal = proposer.propose(ctx)
        planned = PlannedCandidate(experiment_id=new_experiment_id(), proposal=proposal)
        state.candidates.append(planned)
        if not proposal.ok:
            planned.guard_reasons = [f"proposal failed: {proposal.error}"]
            continue
        new_files = {**base_files, **proposal.files}
        changed = sorted(p for p in set(proposal.files) if proposal.files[p] != base_files.get(p))
        verdict = guard_mod.check(changed, base_files, new_files, cfg)
        planned.guard_ok, planned.guard_reasons = verdict.ok, list(verdict.reasons)
        if not verdict.ok:
            planned.patch = _text_patch(base_files, new_files)
            continue
        cand = forge.open_candidate(
            planned.experiment_id, base, {p: new_files[p] for p in changed},
            title=_title(proposal), body=_pr_body(planned, cfg),
        )
        planned.candidate = cand
        planned.patch = forge.diff(base, cand.commit)
        # The forge's own view of the commit is what counts: it must touch only editable files.
        real_changed = forge.changed_files(base, cand.commit)
        verdict = guard_mod.check(real_changed, base_files, new_files, cfg)
        ok, tail = _run_guard_command(cfg, forge_repo, cand.commit) if verdict.ok else (False, "")
        planned.guard_ok = verdict.ok and ok
        planned.guard_reasons = list(verdict.reasons) + ([] if ok else [f"guard command failed: {tail[-500:]}"])
        forge.set_status(cand, "pending" if planned.guard_ok else "failure",
                         "queued for training" if planned.guard_ok else "rejected by the guard")
    return state


def _title(p: Proposal) -> str:
    text = p.hypothesis.strip().splitlines()[0] if p.hypothesis.strip() else "experiment"
    return f"autoresearch: {text[:90]}"


def _pr_body(c: PlannedCandidate, cfg: Config) -> str:
    return (
        f"**Hypothesis.** {c.proposal.hypothesis}\n\n"
        f"Proposed by `{c.proposal.proposer}`, experiment `{c.experiment_id}`, preset `{cfg.preset}`.\n\n"
        "The locked harness will train this candidate for the preset's fixed budget and the judge will merge it "
        "only if it beats the baseline by more than the measured noise. Results follow in a comment."
    )


def _text_patch(old: dict[str, str], new: dict[str, str]) -> str:
    import difflib

    out = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path, ""), new.get(path, "")
        if a != b:
            out.extend(difflib.unified_diff(a.splitlines(True), b.splitlines(True), f"a/{path}", f"b/{path}"))
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# step 2: train


def _request(state: TickState, exp_id: str, role: str, commit: str, files: dict[str, str], seed: int) -> RunRequest:
    return RunRequest(
        experiment_id=exp_id, role=role, commit=commit, train_py=files["train.py"], preset=state.preset, seed=seed
    )


def train(cfg: Config, state: TickState, runner: Runner, ledger: Ledger, progress: Progress = _quiet) -> TickResults:
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
    base = baseline_stats(ledger, state.base_commit, state.preset, state.runner, results.for_experiment(state.tick_id))
    if base is None:
        return results
    noise = noise_for(ledger, state.preset, state.runner, base)
    confirm: list[RunRequest] = []
    for c in state.runnable():
        outcome = judge_mod.decide(results.for_experiment(c.experiment_id), base, noise, cfg.judge)
        if isinstance(outcome, judge_mod.NeedConfirmation):
            files = {**state.base_files, **c.proposal.files}
            confirm.append(
                _request(state, c.experiment_id, "confirmation", c.candidate.commit, files, CONFIRMATION_SEED_BASE)
            )
    if confirm:
        progress(f"confirming {len(confirm)} marginal win(s) with a new seed")
        results.outcomes.extend(runner.run_many(confirm))
    return results


# ----------------------------------------------------------------------------------------------
# step 3: judge


def _sum(outcomes: list[RunOutcome]) -> float:
    return sum(o.wall_seconds for o in outcomes)


def judge(
    cfg: Config,
    state: TickState,
    results: TickResults,
    forge: Forge,
    ledger: Ledger,
    repo_root: Path,
    summarizer: Callable[[str], str | None] | None = None,
    progress: Progress = _quiet,
    gpu_usd_per_second: float = 0.0,
) -> list[ExperimentRecord]:
    done = {r.id for r in ledger.records()}
    written: list[ExperimentRecord] = []

    baseline_runs = results.for_experiment(state.tick_id, "baseline")
    if baseline_runs and state.tick_id not in done:
        rec = ExperimentRecord(
            id=state.tick_id, kind="baseline", tick=state.tick_id, parent_commit=state.base_commit,
            candidate_commit=state.base_commit, preset=state.preset, runner=state.runner,
            device=next((o.metrics.device for o in baseline_runs if o.metrics), None),
            seeds=[o.request.seed for o in baseline_runs], runs=baseline_runs,
            gpu_seconds=_sum(baseline_runs), cost_usd=_sum(baseline_runs) * gpu_usd_per_second,
            harness_sha256=next((o.metrics.harness_sha256 for o in baseline_runs if o.metrics), None),
            hypothesis="baseline measurement", finished_at=utcnow(), actions_run_url=state.actions_run_url,
        )
        ledger.append(rec)
        written.append(rec)
    base = baseline_stats(ledger, state.base_commit, state.preset, state.runner)
    noise = noise_for(ledger, state.preset, state.runner, base)

    # Decide every candidate first, then merge at most one: two wins measured against the same base
    # are not known to stack, so only the best is merged and the others are left for re-testing.
    decided: list[tuple[PlannedCandidate, Verdict, list[RunOutcome]]] = []
    for c in state.candidates:
        runs = results.for_experiment(c.experiment_id)
        if not c.proposal.ok:
            v = Verdict(decision="proposal-failed", reason=c.guard_reasons[0] if c.guard_reasons else "proposal failed")
        elif not c.guard_ok:
            v = Verdict(decision="invalid", reason="guard: " + "; ".join(c.guard_reasons))
        elif base is None:
            v = Verdict(decision="infra-error", reason="no baseline measurement succeeded for the base commit")
        elif not runs:
            v = Verdict(decision="infra-error", reason="the candidate was not run (train step missing or interrupted)")
        else:
            out = judge_mod.decide(runs, base, noise, cfg.judge)
            if isinstance(out, judge_mod.NeedConfirmation):
                v = Verdict(
                    decision="discard",
                    reason="a marginal win whose confirmation run is missing; not kept without confirmation",
                    candidate_mean=out.candidate_mean if hasattr(out, "candidate_mean") else None,
                    baseline_mean=base.mean,
                )
            else:
                v = out
        decided.append((c, v, runs))

    keeps = [(c, v, r) for c, v, r in decided if v.decision == "keep"]
    winner = min(keeps, key=lambda t: t[1].delta if t[1].delta is not None else 0.0)[0] if keeps else None
    for c, v, runs in decided:
        if v.decision == "keep" and c is not winner:
            v = v.model_copy(update={
                "decision": "discard",
                "reason": f"beat the baseline ({v.reason}) but {winner.experiment_id} won this tick by more; "
                "re-test on the new base",
            })
        if c.experiment_id in done:
            continue
        rec = _record(cfg, state, c, v, runs, base, gpu_usd_per_second)
        progress(f"{c.experiment_id}: {v.decision}")
        if c.candidate is not None:
            _act(forge, c.candidate, rec, cfg)
        ledger.append(rec)
        written.append(rec)
        if v.decision == "keep" and rec.merged_commit:
            # The candidate's own runs measured exactly the new base's train.py with this harness:
            # they are its first baseline values, so the next tick starts with a known baseline.
            ok_runs = [o for o in runs if o.metrics is not None and o.metrics.status == "ok"]
            if ok_runs:
                brec = ExperimentRecord(
                    id=f"{c.experiment_id}-base", kind="baseline", tick=state.tick_id,
                    parent_commit=rec.merged_commit, candidate_commit=rec.merged_commit, preset=state.preset,
                    runner=state.runner, device=rec.device, seeds=[o.request.seed for o in ok_runs], runs=ok_runs,
                    hypothesis=f"baseline carried over from kept experiment {c.experiment_id}",
                    harness_sha256=rec.harness_sha256, finished_at=utcnow(),
                )
                ledger.append(brec)
                written.append(brec)
        learnings.append_entry(repo_root / cfg.paths.resources, rec)

    if any(r.kind == "experiment" for r in written):
        learnings.condense(repo_root / cfg.paths.resources, ledger.experiments(), summarizer=summarizer)
        (repo_root / cfg.paths.results_tsv).parent.mkdir(parents=True, exist_ok=True)
        (repo_root / cfg.paths.results_tsv).write_text(ledger.export_tsv(), encoding="utf-8")
    if written:
        forge.persist(
            [cfg.paths.ledger, cfg.paths.results_tsv, cfg.paths.resources],
            f"autoresearch: ledger for tick {state.tick_id} ({len(written)} record(s))",
        )
    return written


def _record(
    cfg: Config, state: TickState, c: PlannedCandidate, v: Verdict, runs: list[RunOutcome],
    base: BaselineStats | None, gpu_usd_per_second: float,
) -> ExperimentRecord:
    metrics = [o.metrics for o in runs if o.metrics is not None]
    gpu = _sum(runs)
    return ExperimentRecord(
        id=c.experiment_id, kind="experiment", tick=state.tick_id, finished_at=utcnow(),
        proposer=c.proposal.proposer, hypothesis=c.proposal.hypothesis, edit=c.proposal.edit,
        parent_commit=state.base_commit,
        candidate_commit=c.candidate.commit if c.candidate else None,
        branch=c.candidate.branch if c.candidate else None,
        pr_number=c.candidate.pr_number if c.candidate else None,
        pr_url=c.candidate.pr_url if c.candidate else None,
        actions_run_url=state.actions_run_url,
        patch=c.patch, patch_sha256=sha256_text(c.patch) if c.patch else None,
        preset=state.preset, runner=state.runner, device=metrics[0].device if metrics else None,
        seeds=[o.request.seed for o in runs], runs=runs, baseline=base, verdict=v,
        llm=c.proposal.usage, gpu_seconds=gpu, cost_usd=gpu * gpu_usd_per_second + c.proposal.usage.cost_usd,
        harness_sha256=metrics[0].harness_sha256 if metrics else None,
    )


def _act(forge: Forge, cand: Candidate, rec: ExperimentRecord, cfg: Config) -> None:
    """The forge action for a verdict. The comment and status come first, so a merge that fails still
    leaves the evidence on the PR; the ledger record is written by the caller either way."""
    from autoresearch_ci.learnings import render_pr_comment

    v = rec.verdict
    forge.comment(cand, render_pr_comment(rec))
    if v.decision == "keep":
        forge.set_status(cand, "success", f"keep: {v.reason}"[:140])
        rec.merged_commit = forge.merge(cand, f"autoresearch: {rec.hypothesis.strip()[:72]} ({rec.id})")
    elif v.decision == "infra-error":
        # Not the candidate's fault: leave the branch and PR open so the next tick can re-run it.
        forge.set_status(cand, "error", f"infrastructure: {v.reason}"[:140])
    else:
        forge.set_status(cand, "failure", f"{v.decision}: {v.reason}"[:140])
        rec.archived_ref = forge.archive(cand)


def llm_usage(state: TickState) -> LLMUsage:
    total = LLMUsage()
    for c in state.candidates:
        u = c.proposal.usage
        total = LLMUsage(
            model=u.model or total.model,
            input_tokens=total.input_tokens + u.input_tokens,
            output_tokens=total.output_tokens + u.output_tokens,
            cache_read_input_tokens=total.cache_read_input_tokens + u.cache_read_input_tokens,
            cache_creation_input_tokens=total.cache_creation_input_tokens + u.cache_creation_input_tokens,
            cost_usd=total.cost_usd + u.cost_usd,
        )
    return total
