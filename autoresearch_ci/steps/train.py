"""Step 2, train: pairs of runs, a round at a time, until the judge's rule decides each candidate.

    train(cfg, state, runner, ledger) -> TickResults

Runs where the GPU is, with no other secret. The base and every candidate run on the same seeds
0, 1, 2, ... (same initialisation, same data order), so the judge can decide on per-seed
differences (verdict.py). A round brings every undecided candidate to its next look (verdict.looks:
after every pair when the runner runs one at a time, every second pair otherwise), with the base's
runs on the same seeds where the ledger has no fresh one; the runner runs a round's runs side by
side as far as it can. After each round verdict.decide says keep, discard or more for each
candidate: a clear loser stops after its first round, a promising one earns more pairs, up to
max_pairs. All of it happens in this one step, so a tick's candidates finish in the tick.
"""

from __future__ import annotations

import threading

from autoresearch_ci import baselines, verdict
from autoresearch_ci.config import Config
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.records import RunOutcome, RunRequest
from autoresearch_ci.runners.base import Runner, watching
from autoresearch_ci.steps.state import PlannedCandidate, Progress, TickResults, TickState, quiet

# Seeds a candidate may use: its max_pairs, plus a few to replace seeds lost to the infrastructure.
SPARE_SEEDS = 3


def _request(state: TickState, exp_id: str, role: str, commit: str, train_py: str, seed: int) -> RunRequest:
    return RunRequest(
        experiment_id=exp_id, role=role, commit=commit, train_py=train_py, preset=state.preset, seed=seed
    )


def slots(runner: Runner, preset: str) -> int | None:
    """How many runs the runner runs side by side for this preset (None: as many as it is given)."""
    fn = getattr(runner, "slots", None)
    return fn(preset) if callable(fn) else None


def _lost(o: RunOutcome) -> bool:
    return o.metrics is None or o.metrics.status == "infra_error"


def train(
    cfg: Config, state: TickState, runner: Runner, ledger: Ledger, progress: Progress = quiet
) -> TickResults:
    results = TickResults(tick_id=state.tick_id)
    cands = state.runnable()
    if not cands:
        return results
    jc = cfg.judge
    records = ledger.records()
    parallel = slots(runner, state.preset)
    schedule = verdict.looks(jc, parallel)
    undecided: dict[str, PlannedCandidate] = {c.experiment_id: c for c in cands}
    files = {c.experiment_id: {**state.base_files, **c.proposal.files}["train.py"] for c in cands}
    base_py = state.base_files["train.py"]
    limit = jc.max_pairs + SPARE_SEEDS
    at = f", {parallel} at a time" if parallel else ""

    def base_now():
        return baselines.current(
            records,
            state.base_commit,
            state.base_files,
            state.preset,
            state.runner,
            tick_id=state.tick_id,
            since=state.baseline_cutoff,
            new_runs=results.for_experiment(state.tick_id, "baseline"),
        )

    for n, k in enumerate(schedule, 1):
        base = base_now()
        have = set(base.seeds) if base else set()
        base_tried = {o.request.seed for o in results.for_experiment(state.tick_id, "baseline")}
        base_dead = base_tried - have  # a seed the base failed on cannot be paired: skip it
        todo_base: set[int] = set()
        todo: list[RunRequest] = []
        for eid, c in undecided.items():
            runs = results.for_experiment(eid)
            dead = base_dead | {o.request.seed for o in runs if _lost(o)}
            seeds = [s for s in range(limit) if s not in dead][:k]
            ran = {o.request.seed for o in runs}
            todo += [
                _request(state, eid, "candidate", c.candidate.commit, files[eid], s)
                for s in seeds
                if s not in ran
            ]
            todo_base |= {s for s in seeds if s not in have and s not in base_tried}
        if n == 1:  # the base's first seeds are measured once, whatever the first look needs
            todo_base |= {s for s in state.baseline_seeds_needed if s not in have and s not in base_tried}
        requests = [
            _request(state, state.tick_id, "baseline", state.base_commit, base_py, s)
            for s in sorted(todo_base)
        ] + todo
        if requests:
            what = ([f"baseline seeds {_seeds(sorted(todo_base))}"] if todo_base else []) + [
                f"{eid} seeds {_seeds([r.seed for r in todo if r.experiment_id == eid])}"
                for eid in undecided
                if any(r.experiment_id == eid for r in todo)
            ]
            progress(f"round {n}: {len(requests)} run(s) on {runner.name}{at}: " + "; ".join(what))
            results.outcomes.extend(_run_round(runner, requests, progress))
        base = base_now()
        if base is None:
            progress("no baseline run succeeded: nothing can be paired")
            return results
        for eid in list(undecided):
            runs = results.for_experiment(eid)
            noise = baselines.paired_noise(records, base, runs, tick_id=state.tick_id)
            out = verdict.decide(runs, base, noise, jc)
            last = n == len(schedule)
            if isinstance(out, verdict.MorePairs) and not last:
                progress(f"{eid}: {_short(out.delta, out.pairs)}: more pairs")
                continue
            what = out.decision if isinstance(out, verdict.Verdict) else "stopped"
            progress(f"{eid}: {_short(getattr(out, 'delta', None), getattr(out, 'pairs', None))}: {what}")
            del undecided[eid]
        if not undecided:
            break
    return results


def _seeds(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def _short(delta: float | None, pairs: int | None) -> str:
    if delta is None or pairs is None:
        return "no pairs"
    return f"paired Δ {delta:+.4f} ({pairs} pair{'' if pairs == 1 else 's'})"


def _key(r: RunRequest) -> tuple[str, str, int]:
    return r.experiment_id, r.role, r.seed  # unique within a round


def _run_round(runner: Runner, requests: list[RunRequest], progress: Progress) -> list[RunOutcome]:
    """One round's runs, with a line for each as it starts and as it ends, from the runner's threads
    as they happen: in a pipe or a CI log as on a terminal, a round of several minutes is seen to
    move. A runner that cannot report them (a test's stand-in) gets its lines when the round ends."""
    n = len(requests)
    label = {
        _key(r): f"run {i}/{n}: {'baseline' if r.role == 'baseline' else r.experiment_id} seed {r.seed}"
        for i, r in enumerate(requests, 1)
    }
    told: set[tuple[str, str, int]] = set()
    lock = threading.Lock()

    def events(request: RunRequest, outcome: RunOutcome | None) -> None:
        key = _key(request)
        with lock:
            if outcome is None:
                progress(f"  {label.get(key, key)}: started")
            else:
                told.add(key)
                progress(_run_line(outcome, label.get(key)))

    with watching(runner, events):
        outcomes = runner.run_many(requests)
    with lock:
        for o in outcomes:
            if _key(o.request) not in told:
                progress(_run_line(o, label.get(_key(o.request))))
    return outcomes


def _run_line(o: RunOutcome, label: str | None = None) -> str:
    r, m = o.request, o.metrics
    if m is None:
        result = f"infra error: {(o.infra_error or '')[:120]}"
    elif m.val_bpb is not None and m.status == "ok":
        result = f"val_bpb {m.val_bpb:.4f}"
    else:
        result = m.status
    who = label or f"{'baseline' if r.role == 'baseline' else r.experiment_id} seed {r.seed}"
    return f"  {who}: {o.wall_seconds:.0f} s, {result}"
