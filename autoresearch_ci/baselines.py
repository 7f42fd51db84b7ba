"""What a candidate is compared against: the baseline of its base's train.py, and the noise around it.

A baseline is identified by what it measures, the bytes of train.py (plus preset and runner), not by
the commit: the ledger's own bookkeeping commits move main without changing what is measured.
When a baseline goes stale (too old, or it has served too many experiments) it is measured afresh
and only the fresh runs count, so drift in the machines under it is dropped, not averaged in.

Pure: the steps read the ledger once and hand its records here with plain values (commit, preset,
runner, the judge's settings); nothing here reads or writes anything.

    plan(records, ...)     -> (seeds to run, fresh)   propose: what this tick must measure
    current(records, ...)  -> BaselineStats | None    train, judge: the baseline to beat
    noise(records, ...)    -> NoiseEstimate           train, judge: the spread around it
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from autoresearch_ci.noise import NoiseEstimate, noise_estimate
from autoresearch_ci.records import BaselineStats, ExperimentRecord, RunOutcome, ok_runs, sha256_text, utcnow

if TYPE_CHECKING:
    from autoresearch_ci.config import Config, JudgeConfig
    from autoresearch_ci.ledger import Ledger

NOISE_GROUPS = 20  # the newest baselines whose spread is pooled into the noise


def code_sha(files: dict[str, str]) -> str:
    """What a baseline measures: the sha256 of train.py's text."""
    return sha256_text(files["train.py"])


# ----------------------------------------------------------------------------------------------
# the baseline records


def matching(
    records: Iterable[ExperimentRecord],
    commit: str,
    preset: str,
    runner: str,
    device: str | None = None,
    *,
    train_sha256: str | None = None,
) -> list[ExperimentRecord]:
    """Baseline measurements of `commit` on this preset and runner (and device, when given).

    With train_sha256, a baseline of another commit whose runs measured the same train.py bytes
    counts too: a bookkeeping commit (ledger, resources.md) does not change what is measured."""

    def same_code(r: ExperimentRecord) -> bool:
        return train_sha256 is not None and any(
            o.metrics is not None and o.metrics.train_sha256 == train_sha256 for o in r.runs
        )

    return [
        r
        for r in records
        if r.kind == "baseline"
        and (commit in (r.parent_commit, r.candidate_commit) or same_code(r))
        and r.preset == preset
        and r.runner == runner
        and (device is None or r.device is None or r.device == device)
    ]


def groups(
    records: Iterable[ExperimentRecord],
    preset: str,
    runner: str,
    device: str | None = None,
    limit: int | None = NOISE_GROUPS,
) -> dict[str, list[float]]:
    """val_bpb of every ok baseline run, grouped by the train.py measured (newest `limit` groups):
    the input of noise_estimate."""
    out: dict[str, list[float]] = {}
    for r in records:
        if r.kind != "baseline" or r.preset != preset or r.runner != runner:
            continue
        if device is not None and r.device is not None and r.device != device:
            continue
        # Grouped by what was measured (train.py's bytes), not by commit: the ledger's own
        # bookkeeping commits move main without changing the code under test.
        key = next(
            (o.metrics.train_sha256 for o in r.runs if o.metrics is not None and o.metrics.train_sha256),
            r.parent_commit,
        )
        if values := r.ok_values():  # re-inserting moves the group to the end: newest last
            out[key] = out.pop(key, []) + values
    items = list(out.items())
    return dict(items[-limit:] if limit else items)


def staleness(
    records: Sequence[ExperimentRecord],
    commit: str,
    preset: str,
    runner: str,
    judge: JudgeConfig,
    *,
    now: datetime | None = None,
    train_sha256: str | None = None,
) -> str | None:
    """Why the baseline of `commit` must be measured again (None: it is fresh).

    A baseline drifts with the machines under it (drivers, runtime-fetched kernels, Modal hosts), so it
    is re-measured when it is older than baseline_max_age_hours or has served baseline_max_experiments."""
    recs = matching(records, commit, preset, runner, train_sha256=train_sha256)
    if not recs:
        return f"no baseline of {commit[:10]} on {preset}/{runner}"
    newest = max((r.finished_at or r.created_at) for r in recs)
    age_h = ((now or utcnow()) - newest).total_seconds() / 3600
    if age_h > judge.baseline_max_age_hours:
        return f"the newest baseline is {age_h:.1f} h old (limit {judge.baseline_max_age_hours:g} h)"
    served = sum(
        1
        for r in records
        if r.kind == "experiment"
        and r.parent_commit == commit
        and r.preset == preset
        and r.runner == runner
        and r.created_at > newest
    )
    if served >= judge.baseline_max_experiments:
        return f"{served} experiments judged since the last baseline (limit {judge.baseline_max_experiments})"
    return None


def baseline_staleness(
    ledger: Ledger,
    commit: str,
    cfg: Config,
    *,
    runner: str | None = None,
    now: datetime | None = None,
    train_sha256: str | None = None,
) -> str | None:
    """staleness() asked of a Ledger with a Config: the preset and (by default) runner it names."""
    runner = runner or cfg.runner
    return staleness(
        ledger.records(), commit, cfg.preset, runner, cfg.judge, now=now, train_sha256=train_sha256
    )


def baseline_is_stale(ledger: Ledger, commit: str, cfg: Config, **kwargs) -> bool:
    return baseline_staleness(ledger, commit, cfg, **kwargs) is not None


# ----------------------------------------------------------------------------------------------
# what a tick measures, and what it is judged against


def plan(
    records: Sequence[ExperimentRecord],
    commit: str,
    files: dict[str, str],
    preset: str,
    runner: str,
    judge: JudgeConfig,
) -> tuple[list[int], bool]:
    """(seeds to run, fresh): fresh means the earlier measurements are stale and are not used."""
    sha = code_sha(files)
    recs = matching(records, commit, preset, runner, train_sha256=sha)
    seeds_done = [o.request.seed for r in recs for o in ok_runs(r.runs)]
    stale = staleness(records, commit, preset, runner, judge, train_sha256=sha) if recs else None
    dof = noise_estimate(groups(records, preset, runner)).dof
    if recs and stale is None and len(seeds_done) >= judge.baseline_seeds and dof >= judge.noise_dof_target:
        return [], False
    fresh = bool(recs) and stale is not None
    used = {o.request.seed for r in recs for o in r.runs}
    out, s = [], 0
    need = judge.baseline_seeds if fresh else max(judge.baseline_seeds - len(seeds_done), 0)
    if dof + max(need - 1, 0) < judge.noise_dof_target:
        need += 1  # one more run sharpens the noise estimate (see JudgeConfig.noise_dof_target)
    while len(out) < need:
        if s not in used:
            out.append(s)
        s += 1
    return out, fresh


def stats(
    commit: str, preset: str, runner: str, runs: Iterable[RunOutcome], ids: list[str]
) -> BaselineStats | None:
    """The baseline of these runs (only the ok ones count); None when none is ok."""
    runs = ok_runs(runs)
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


def current(
    records: Sequence[ExperimentRecord],
    commit: str,
    files: dict[str, str],
    preset: str,
    runner: str,
    *,
    tick_id: str,
    fresh: bool,
    new_runs: Sequence[RunOutcome],
) -> BaselineStats | None:
    """The baseline a tick's candidates are judged against: this tick's new runs when the old
    baseline was stale, otherwise every earlier measurement of the same train.py plus this tick's."""
    if fresh:
        return stats(commit, preset, runner, new_runs, [tick_id])
    recs = [
        r for r in matching(records, commit, preset, runner, train_sha256=code_sha(files)) if r.id != tick_id
    ]
    runs = [o for r in recs for o in r.runs] + list(new_runs)
    return stats(commit, preset, runner, runs, [r.id for r in recs] + [tick_id])


def noise(
    records: Sequence[ExperimentRecord],
    files: dict[str, str],
    preset: str,
    runner: str,
    current: BaselineStats | None,
) -> NoiseEstimate:
    """Pooled spread of every baseline measured on this preset and runner, this tick's included.

    Groups are keyed by the train.py measured, so the current baseline (which may hold this tick's
    new runs) replaces the group of the base's own code."""
    measured = groups(records, preset, runner)
    if current is not None:
        measured[code_sha(files)] = list(current.values)
    return noise_estimate(measured)
