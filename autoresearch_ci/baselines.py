"""What a candidate is compared against: its base's val_bpb seed by seed, and the noise of a pair.

A baseline value is identified by what it measures: the bytes of train.py, the preset, the runner
and the seed (and the device it ran on), not by the commit: the ledger's own bookkeeping commits move
main without changing what is measured. Each seed's value is reused by every later candidate of
that train.py until it goes stale (older than baseline_max_age_hours, or measured before the
baseline_max_experiments newest experiments judged against it); then that seed is measured again
and only the new run counts, so drift in the machines under it is dropped, not averaged in.

A kept candidate's own runs become its train.py's baseline values (they are the same bytes, the
same seeds): re-measuring them costs a round per keep and buys little, because what a re-run on
the same seed changes is only the run noise; the code x seed part that the keep selected for is
the same on every re-run. benchmarks/winners_curse.py simulates the three choices.

Pure: the steps read the ledger once and hand its records here with plain values (commit, preset,
runner, the judge's settings); nothing here reads or writes anything.

    cutoff(records, ...)        -> datetime          propose: baseline runs before it are stale
    plan(records, ...)          -> (seeds, cutoff)   propose: what the first round must measure
    current(records, ...)       -> BaselineStats     train, judge: the base's value on each seed
    paired_noise(records, ...)  -> NoiseEstimate     train, judge: sigma_d for one candidate
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from autoresearch_ci import noise as noise_mod
from autoresearch_ci.noise import NoiseEstimate
from autoresearch_ci.records import BaselineStats, ExperimentRecord, RunOutcome, ok_runs, sha256_text, utcnow

if TYPE_CHECKING:
    from autoresearch_ci.config import Config, JudgeConfig
    from autoresearch_ci.ledger import Ledger

NOISE_GROUPS = 20  # the newest blocks (a base train.py and its candidates) pooled into the noise
FIRST_SEEDS = (0, 1)  # what a first round may pair on: the base is measured on them up front
# A candidate whose mean paired difference is this fraction of val_bpb or more away from its base
# (a diverging or broken change) says little about the seed noise of small changes and would swamp
# the pooled estimate; it is left out of it (its own verdict is unaffected). Leaving rows out by
# their mean does not bias a variance estimated from within-row contrasts.
FAR_FRACTION = 0.05


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
# per-seed baseline values


def _judged_against(r: ExperimentRecord, sha: str, commit: str, preset: str, runner: str) -> bool:
    if r.kind != "experiment" or r.preset != preset or r.runner != runner:
        return False
    if r.baseline is not None and r.baseline.train_sha256:
        return r.baseline.train_sha256 == sha
    return r.parent_commit == commit


def cutoff(
    records: Sequence[ExperimentRecord],
    commit: str,
    files: dict[str, str],
    preset: str,
    runner: str,
    judge: JudgeConfig,
    *,
    now: datetime | None = None,
) -> datetime:
    """Baseline runs of this train.py that finished before this are stale: older than
    baseline_max_age_hours, or measured before the newest baseline_max_experiments experiments
    judged against it. Fixed once per tick (propose) so that train and judge see the same values."""
    now = now or utcnow()
    sha = code_sha(files)
    limit = now - timedelta(hours=judge.baseline_max_age_hours)
    served = sorted(
        (_aware(r.created_at) for r in records if _judged_against(r, sha, commit, preset, runner)),
        reverse=True,
    )
    if len(served) >= judge.baseline_max_experiments:
        limit = max(limit, served[judge.baseline_max_experiments - 1])
    return limit


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _base_runs(
    records: Iterable[ExperimentRecord], sha: str, preset: str, runner: str
) -> list[tuple[str, RunOutcome]]:
    """(record id, run) of every ok run that measured this train.py on this preset and runner:
    baseline records, and the runs of a kept candidate with the same bytes (see the module doc)."""
    out = []
    for r in records:
        if r.preset != preset or r.runner != runner:
            continue
        kept = r.kind == "experiment" and r.verdict is not None and r.verdict.decision == "keep"
        if r.kind != "baseline" and not kept:
            continue
        for o in ok_runs(r.runs):
            if o.metrics.train_sha256 == sha and (r.kind == "baseline" or o.request.role == "candidate"):
                out.append((r.id, o))
    return out


def seed_values(
    records: Sequence[ExperimentRecord],
    files: dict[str, str],
    preset: str,
    runner: str,
    *,
    since: datetime | None,
    new_runs: Sequence[RunOutcome] = (),
    tick_id: str | None = None,
) -> dict[int, tuple[str, RunOutcome]]:
    """seed -> (record id, run): the base's usable value on each seed. This tick's runs first, then
    the newest run that finished at or after `since`; the runs of one device (the newest's)."""
    sha = code_sha(files)
    found: dict[int, tuple[str, RunOutcome]] = {}
    for rid, o in _base_runs(records, sha, preset, runner):
        if since is not None and _aware(o.finished_at) < since:
            continue
        s = o.request.seed
        if s not in found or o.finished_at >= found[s][1].finished_at:
            found[s] = (rid, o)
    for o in ok_runs(new_runs):
        found[o.request.seed] = (tick_id or "", o)
    if not found:
        return {}
    newest = max(found.values(), key=lambda t: (t[1].request.experiment_id == tick_id, t[1].finished_at))
    device = newest[1].metrics.device
    return {s: t for s, t in sorted(found.items()) if t[1].metrics.device == device}


def plan(
    records: Sequence[ExperimentRecord],
    commit: str,
    files: dict[str, str],
    preset: str,
    runner: str,
    judge: JudgeConfig,
    *,
    now: datetime | None = None,
) -> tuple[list[int], datetime]:
    """(base seeds the first round must measure, the staleness cutoff of this tick)."""
    since = cutoff(records, commit, files, preset, runner, judge, now=now)
    have = seed_values(records, files, preset, runner, since=since)
    return [s for s in FIRST_SEEDS if s not in have], since


def current(
    records: Sequence[ExperimentRecord],
    commit: str,
    files: dict[str, str],
    preset: str,
    runner: str,
    *,
    tick_id: str,
    since: datetime | None,
    new_runs: Sequence[RunOutcome],
) -> BaselineStats | None:
    """The base's value on each seed a tick's candidates are paired with (None: no ok run at all)."""
    found = seed_values(
        [r for r in records if r.id != tick_id],
        files,
        preset,
        runner,
        since=since,
        new_runs=new_runs,
        tick_id=tick_id,
    )
    if not found:
        return None
    seeds = sorted(found)
    runs = [found[s][1] for s in seeds]
    values = [o.metrics.val_bpb for o in runs]
    ids = list(dict.fromkeys(found[s][0] for s in seeds))
    return BaselineStats(
        commit=commit,
        preset=preset,
        runner=runner,
        device=runs[0].metrics.device,
        values=values,
        seeds=seeds,
        mean=statistics.fmean(values),
        std=statistics.stdev(values) if len(values) > 1 else 0.0,
        record_ids=ids,
        train_sha256=code_sha(files),
    )


# ----------------------------------------------------------------------------------------------
# the noise of a pair


class _Block:
    """One base train.py's values by seed and the rows of the candidates paired with them."""

    def __init__(self, base: dict[int, float]):
        self.base = dict(base)
        self.rows: list[dict[int, float]] = []
        self.last = 0

    def fits(self, base: dict[int, float]) -> bool:
        return all(self.base[s] == v for s, v in base.items() if s in self.base)


def _candidate_row(r: ExperimentRecord) -> dict[int, float]:
    seeds = set(r.verdict.seeds)
    return {o.request.seed: o.metrics.val_bpb for o in ok_runs(r.runs) if o.request.seed in seeds}


def paired_noise(
    records: Sequence[ExperimentRecord],
    base: BaselineStats,
    candidate_runs: Sequence[RunOutcome],
    *,
    tick_id: str | None = None,
    limit: int = NOISE_GROUPS,
) -> NoiseEstimate:
    """sigma_d for one candidate: the two-way fit (noise.paired_noise) over the newest `limit`
    blocks of this preset and runner (and device): each block a base train.py's values by seed and
    the earlier candidates paired with them; the current base's block gets this candidate's runs.

    Never this tick's other candidates: the train step decides before their runs are all in, and the
    judge must see what it saw."""
    blocks: dict[str, list[_Block]] = {}
    order = 0
    for r in records:
        v, b = r.verdict, r.baseline
        if (
            r.kind != "experiment"
            or v is None
            or b is None
            or not v.paired
            or (tick_id and r.tick == tick_id)
        ):
            continue
        if v.decision not in ("keep", "discard") or r.preset != base.preset or r.runner != base.runner:
            continue
        if base.device and b.device and b.device != base.device:
            continue
        if v.delta is None or abs(v.delta) > FAR_FRACTION * abs(b.mean):
            continue
        row = _candidate_row(r)
        if len(row) < 2:
            continue  # one seed: nothing about the interaction
        key = b.train_sha256 or b.commit
        chain = blocks.setdefault(key, [])
        vals = b.by_seed()
        if not chain or not chain[-1].fits(vals):
            chain.append(_Block(vals))
        blk = chain[-1]
        blk.base.update(vals)
        blk.rows.append(row)
        order += 1
        blk.last = order
    mine = {o.request.seed: o.metrics.val_bpb for o in ok_runs(candidate_runs)}
    chain = blocks.setdefault(base.train_sha256 or base.commit, [])
    vals = base.by_seed()
    if not chain or not chain[-1].fits(vals):
        chain.append(_Block(vals))
    cur = chain[-1]
    cur.base.update(vals)
    others = sorted((blk for c in blocks.values() for blk in c if blk is not cur), key=lambda x: x.last)
    chosen = others[-(limit - 1) :] if limit > 1 else []
    tables = [[blk.base, *blk.rows] for blk in chosen] + [[cur.base, *cur.rows, mine]]
    return noise_mod.paired_noise(tables)
