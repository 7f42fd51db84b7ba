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
from autoresearch_ci.forge.base import Forge, ForgeError
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
    baseline_fresh: bool = False  # the earlier baseline was stale: judge against this tick's runs only
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
    server, repo, run = (
        os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None


# ----------------------------------------------------------------------------------------------
# baseline bookkeeping
#
# A baseline is identified by what it measures, the bytes of train.py (plus preset and runner), not by
# the commit: the ledger's own bookkeeping commits move main without changing what is measured.
# When a baseline goes stale (too old, or it has served too many experiments) it is measured afresh
# and only the fresh runs count, so drift in the machines under it is dropped, not averaged in.


def code_sha(files: dict[str, str]) -> str:
    return sha256_text(files["train.py"])


def _ok(outcomes) -> list[RunOutcome]:
    return [
        o
        for o in outcomes
        if o.metrics is not None and o.metrics.status == "ok" and o.metrics.val_bpb is not None
    ]


def _stats(
    commit: str, preset: str, runner: str, runs: list[RunOutcome], ids: list[str]
) -> BaselineStats | None:
    runs = _ok(runs)
    if not runs:
        return None
    values = [o.metrics.val_bpb for o in runs]
    return BaselineStats(
        commit=commit,
        preset=preset,
        runner=runner,
        device=runs[0].metrics.device,
        values=values,
        seeds=[o.request.seed for o in runs],
        mean=statistics.fmean(values),
        std=statistics.stdev(values) if len(values) > 1 else 0.0,
        record_ids=ids,
    )


def baseline_stats(ledger: Ledger, state: TickState, new_runs: list[RunOutcome]) -> BaselineStats | None:
    """The baseline a tick's candidates are judged against: this tick's fresh runs when the old
    baseline was stale, otherwise every earlier measurement of the same train.py plus this tick's."""
    if state.baseline_fresh:
        return _stats(state.base_commit, state.preset, state.runner, list(new_runs), [state.tick_id])
    recs = [
        r
        for r in ledger.baselines_for(
            state.base_commit, state.preset, state.runner, train_sha256=code_sha(state.base_files)
        )
        if r.id != state.tick_id
    ]
    runs = [o for r in recs for o in r.runs] + list(new_runs)
    return _stats(state.base_commit, state.preset, state.runner, runs, [r.id for r in recs] + [state.tick_id])


def noise_for(ledger: Ledger, state: TickState, current: BaselineStats | None) -> judge_mod.NoiseEstimate:
    """Pooled spread of every baseline measured on this preset and runner, this tick's included.

    Ledger groups are keyed by the train.py measured, so the current baseline (which may hold this
    tick's new runs) replaces the group of the base's own code."""
    groups = ledger.baseline_groups(state.preset, state.runner)
    if current is not None:
        groups[code_sha(state.base_files)] = list(current.values)
    return judge_mod.noise_estimate(groups)


def plan_baseline(
    cfg: Config, ledger: Ledger, commit: str, files: dict[str, str], runner: str
) -> tuple[list[int], bool]:
    """(seeds to run, fresh): fresh means the earlier measurements are stale and are not used."""
    sha = code_sha(files)
    recs = ledger.baselines_for(commit, cfg.preset, runner, train_sha256=sha)
    seeds_done = [o.request.seed for r in recs for o in _ok(r.runs)]
    stale = (
        judge_mod.baseline_staleness(ledger, commit, cfg, runner=runner, train_sha256=sha) if recs else None
    )
    dof = judge_mod.noise_estimate(ledger.baseline_groups(cfg.preset, runner)).dof
    if (
        recs
        and stale is None
        and len(seeds_done) >= cfg.judge.baseline_seeds
        and dof >= cfg.judge.noise_dof_target
    ):
        return [], False
    fresh = bool(recs) and stale is not None
    used = {o.request.seed for r in recs for o in r.runs}
    out, s = [], 0
    need = cfg.judge.baseline_seeds if fresh else max(cfg.judge.baseline_seeds - len(seeds_done), 0)
    if dof + max(need - 1, 0) < cfg.judge.noise_dof_target:
        need += 1  # one more run sharpens the noise estimate (see JudgeConfig.noise_dof_target)
    while len(out) < need:
        if s not in used:
            out.append(s)
        s += 1
    return out, fresh


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
            check=True,
            capture_output=True,
            timeout=120,
        )
        try:
            return guard_mod.run_guard_command(cfg.guard_command, wt, cfg.guard_timeout_seconds)
        finally:
            subprocess.run(
                ["git", "-C", str(forge_repo), "worktree", "remove", "--force", str(wt)],
                capture_output=True,
                timeout=120,
            )


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
    ledger.recover()
    base = forge.base_commit()
    base_files = {p: forge.read_file(base, p) for p in cfg.editable_files}
    seeds, fresh = plan_baseline(cfg, ledger, base, base_files, runner_name)
    state = TickState(
        tick_id=new_experiment_id(),
        base_commit=base,
        preset=cfg.preset,
        runner=runner_name,
        forge=forge.name,
        base_files=base_files,
        baseline_seeds_needed=seeds,
        baseline_fresh=fresh,
        actions_run_url=actions_run_url(),
    )
    program = forge.read_file(base, cfg.paths.program)
    resources = forge.read_file(base, cfg.paths.resources)
    # Every experiment, not a window: the offline proposer must never repeat an edit tried long ago,
    # and the LLM proposer trims what it shows to the model itself.
    recent = ledger.experiments()
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
            planned.experiment_id,
            base,
            {p: new_files[p] for p in changed},
            title=_title(proposal),
            body=_pr_body(planned, cfg),
        )
        planned.candidate = cand
        planned.patch = forge.diff(base, cand.commit)
        # The forge's own view of the commit is what counts: it must touch only editable files.
        real_changed = forge.changed_files(base, cand.commit)
        verdict = guard_mod.check(real_changed, base_files, new_files, cfg)
        ok, tail = _run_guard_command(cfg, forge_repo, cand.commit) if verdict.ok else (False, "")
        planned.guard_ok = verdict.ok and ok
        planned.guard_reasons = list(verdict.reasons) + (
            [] if ok else [f"guard command failed: {tail[-500:]}"]
        )
        forge.set_status(
            cand,
            "pending" if planned.guard_ok else "failure",
            "queued for training" if planned.guard_ok else "rejected by the guard",
        )
    return state


def _title(p: Proposal) -> str:
    text = p.hypothesis.strip().splitlines()[0] if p.hypothesis.strip() else "experiment"
    return f"autoresearch: {text[:90]}"


def _pr_body(c: PlannedCandidate, cfg: Config) -> str:
    return (
        f"**Hypothesis.** {c.proposal.hypothesis}\n\n"
        f"Proposed by `{c.proposal.proposer}`, experiment `{c.experiment_id}`, preset `{cfg.preset}`.\n\n"
        "The locked harness will train this candidate for the preset's fixed budget and the judge will "
        "merge it only if it beats the baseline by more than the measured noise. Results follow in a comment."
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
    cfg: Config, state: TickState, runner: Runner, ledger: Ledger, progress: Progress = _quiet
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
    base = baseline_stats(ledger, state, results.for_experiment(state.tick_id))
    if base is None:
        return results
    noise = noise_for(ledger, state, base)
    confirm: list[RunRequest] = []
    for c in state.runnable():
        outcome = judge_mod.decide(results.for_experiment(c.experiment_id), base, noise, cfg.judge)
        if isinstance(outcome, judge_mod.NeedConfirmation):
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
    ledger.recover()  # a torn last line from a killed writer goes to .corrupt (reported), not in our way
    done = {r.id: r for r in ledger.records()}
    written: list[ExperimentRecord] = []

    baseline_runs = results.for_experiment(state.tick_id, "baseline")
    if baseline_runs and state.tick_id not in done:
        rec = ExperimentRecord(
            id=state.tick_id,
            kind="baseline",
            tick=state.tick_id,
            parent_commit=state.base_commit,
            candidate_commit=state.base_commit,
            preset=state.preset,
            runner=state.runner,
            device=next((o.metrics.device for o in baseline_runs if o.metrics), None),
            seeds=[o.request.seed for o in baseline_runs],
            runs=baseline_runs,
            gpu_seconds=_sum(baseline_runs),
            cost_usd=_sum(baseline_runs) * gpu_usd_per_second,
            harness_sha256=next((o.metrics.harness_sha256 for o in baseline_runs if o.metrics), None),
            hypothesis="baseline measurement",
            finished_at=utcnow(),
            actions_run_url=state.actions_run_url,
        )
        ledger.append(rec)
        written.append(rec)
    base = baseline_stats(ledger, state, baseline_runs)
    noise = noise_for(ledger, state, base)

    # Decide every candidate first, then merge at most one: two wins measured against the same base
    # are not known to stack, so only the best is merged and the others are left for re-testing.
    decided: list[tuple[PlannedCandidate, Verdict, list[RunOutcome]]] = []
    for c in state.candidates:
        runs = results.for_experiment(c.experiment_id)
        if not c.proposal.ok:
            v = Verdict(
                decision="proposal-failed",
                reason=c.guard_reasons[0] if c.guard_reasons else "proposal failed",
            )
        elif not c.guard_ok:
            v = Verdict(decision="invalid", reason="guard: " + "; ".join(c.guard_reasons))
        elif base is None:
            v = Verdict(
                decision="infra-error", reason="no baseline measurement succeeded for the base commit"
            )
        elif not runs:
            v = Verdict(
                decision="infra-error", reason="the candidate was not run (train step missing or interrupted)"
            )
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
            v = v.model_copy(
                update={
                    "decision": "discard",
                    "reason": f"beat the baseline ({v.reason}) but {winner.experiment_id} won this tick "
                    "by more; re-test on the new base",
                }
            )
        prior = done.get(c.experiment_id)
        if prior is not None and (not prior.forge_error or c.candidate is None):
            continue  # judged and acted on already
        # A record whose forge action failed is acted on again, with the verdict it recorded.
        rec = (
            prior.model_copy(update={"forge_error": None})
            if prior is not None
            else _record(cfg, state, c, v, runs, base, gpu_usd_per_second)
        )
        progress(f"{c.experiment_id}: {rec.verdict.decision}")
        if c.candidate is not None:
            try:
                _act(forge, c.candidate, rec, cfg)
            except ForgeError as exc:
                # The verdict stands and is recorded; the forge action can be redone by hand or by
                # the next run of this tick (every forge action is idempotent).
                rec.forge_error = str(exc)
                progress(f"{c.experiment_id}: forge action failed: {exc}")
        if prior is not None and rec == prior:
            continue  # failed again the same way: nothing new to record
        ledger.append(rec)  # for a retried action: an update (the ledger keeps an id's last line)
        written.append(rec)
        # A kept candidate's own runs are not carried over as the new base's baseline: they were
        # selected for being low (winner's curse), so the next tick measures the new base afresh.
        learnings.append_entry(repo_root / cfg.paths.resources, rec)

    if any(r.kind == "experiment" for r in written):
        learnings.condense(
            repo_root / cfg.paths.resources,
            ledger.experiments(),
            summarizer=summarizer,
            every=cfg.learnings.condense_every,
        )
        (repo_root / cfg.paths.results_tsv).parent.mkdir(parents=True, exist_ok=True)
        (repo_root / cfg.paths.results_tsv).write_text(ledger.export_tsv(), encoding="utf-8")
    if written:
        forge.persist(
            [cfg.paths.ledger, cfg.paths.results_tsv, cfg.paths.resources],
            f"autoresearch: ledger for tick {state.tick_id} ({len(written)} record(s))",
        )
    return written


def _record(
    cfg: Config,
    state: TickState,
    c: PlannedCandidate,
    v: Verdict,
    runs: list[RunOutcome],
    base: BaselineStats | None,
    gpu_usd_per_second: float,
) -> ExperimentRecord:
    metrics = [o.metrics for o in runs if o.metrics is not None]
    gpu = _sum(runs)
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


def _act(forge: Forge, cand: Candidate, rec: ExperimentRecord, cfg: Config) -> None:
    """The forge action for a verdict. The comment and status come first, so a merge that fails still
    leaves the evidence on the PR; the ledger record is written by the caller either way."""
    from autoresearch_ci.learnings import render_pr_comment

    v = rec.verdict
    forge.comment(cand, render_pr_comment(rec))
    if v.decision == "keep":
        forge.set_status(cand, "success", f"keep: {v.reason}"[:140])
        # "" means GitHub auto-merge is armed but has not merged yet: nothing to carry over then.
        rec.merged_commit = (
            forge.merge(cand, f"autoresearch: {rec.hypothesis.strip()[:72]} ({rec.id})") or None
        )
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
