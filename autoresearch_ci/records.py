"""The typed data that flows through one experiment, and the ledger record built from it.

proposal -> candidate -> run request -> metrics -> verdict -> forge action -> ledger record.
Every arrow in that chain takes and returns one of these models. The ledger record is the single
source of truth: the PR comment, the job summary, `resources.md` and the dashboard are all rendered
from `ExperimentRecord`s, never from anything else.

Bump SCHEMA_VERSION when a field changes meaning; readers accept older versions.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

HarnessStatus = Literal["ok", "crash", "timeout", "nan", "invalid", "infra_error"]
Decision = Literal["keep", "discard", "crash", "invalid", "infra-error", "proposal-failed"]
RunRole = Literal["baseline", "candidate", "confirmation"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_experiment_id(now: datetime | None = None) -> str:
    """Sortable, unique without coordination: 20261122-141503-3f2a9c."""
    now = now or utcnow()
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class RunMetrics(BaseModel):
    """What `python -m harness run` writes to metrics.json. Extra keys the harness adds are kept."""

    model_config = ConfigDict(extra="allow")

    status: HarnessStatus
    val_bpb: float | None = None
    training_seconds: float | None = None
    total_seconds: float | None = None
    peak_memory_mb: float | None = None
    mfu_percent: float | None = None
    num_steps: int | None = None
    num_params: int | None = None
    tokens_per_second: float | None = None
    harness_sha256: str | None = None
    train_sha256: str | None = None
    preset: str | None = None
    seed: int | None = None
    device: str | None = None
    torch_version: str | None = None
    error: str | None = None
    # How the candidate's code was confined: "bwrap" (its own namespaces, see harness/sandbox.py)
    # or "none" (bubblewrap could not start: in-process defences only). None: a harness that does
    # not say (before the sandbox).
    isolation: str | None = None


class RunRequest(BaseModel):
    """One harness run: a commit's train.py on a preset with a seed."""

    experiment_id: str
    role: RunRole
    commit: str
    train_py: str  # the source text; runners never check out anything themselves
    preset: str
    seed: int


class RunOutcome(BaseModel):
    """A runner's answer to a RunRequest.

    `metrics` is None only when the infrastructure failed on every attempt; then `infra_error`
    says why and the candidate is not charged.
    """

    request: RunRequest
    runner: str
    metrics: RunMetrics | None = None
    infra_error: str | None = None
    attempts: int = 1
    wall_seconds: float = 0.0  # what the runner held a device for, retries included
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime = Field(default_factory=utcnow)
    log_tail: str = ""


def ok_runs(outcomes: Iterable[RunOutcome]) -> list[RunOutcome]:
    """The runs that produced a val_bpb: status ok and a value. The one definition of "the ok runs"."""
    return [
        o
        for o in outcomes
        if o.metrics is not None and o.metrics.status == "ok" and o.metrics.val_bpb is not None
    ]


def ok_values(outcomes: Iterable[RunOutcome]) -> list[float]:
    """val_bpb of the ok runs, in run order."""
    return [o.metrics.val_bpb for o in ok_runs(outcomes)]


class LLMUsage(BaseModel):
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cost_usd: float = 0.0

    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_input_tokens
            + self.cache_creation_input_tokens
        )


class Proposal(BaseModel):
    """A proposer's output. `ok=False` is a failed proposal: it is recorded, never raised."""

    ok: bool = True
    proposer: str
    hypothesis: str = ""
    files: dict[str, str] = Field(default_factory=dict)  # path -> full new text
    parent_commit: str
    edit: dict | None = None  # offline proposer: {"name", "old", "new"} of the constant it moved
    error: str | None = None
    usage: LLMUsage = Field(default_factory=LLMUsage)


class Candidate(BaseModel):
    """A proposal made concrete by the forge: a branch with one commit, and a PR where there is one."""

    experiment_id: str
    branch: str
    base_commit: str
    commit: str
    pr_number: int | None = None
    pr_url: str | None = None


class BaselineStats(BaseModel):
    """The base's val_bpb the candidate was compared with: one value per seed (values[i] on seeds[i])."""

    commit: str
    preset: str
    runner: str
    device: str | None = None
    values: list[float]
    seeds: list[int]
    mean: float
    std: float  # sample standard deviation (ddof=1); 0.0 with one value
    record_ids: list[str] = Field(default_factory=list)
    measured_at: datetime = Field(default_factory=utcnow)
    train_sha256: str | None = None  # the train.py measured (None in records before paired judging)

    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.values, strict=False))


class Verdict(BaseModel):
    """A candidate's verdict and its evidence.

    Paired records (pairs is set) compare the candidate and the base seed by seed: delta is the mean
    of the per-seed differences, [delta_low, delta_high] its 95% interval, noise the std of one
    difference (sigma_d) with noise_dof degrees of freedom, threshold the bar at the last look.
    Older, unpaired records (pairs is None) compared means: noise was the baseline's run-to-run spread.
    """

    decision: Decision
    reason: str
    candidate_mean: float | None = None
    baseline_mean: float | None = None
    delta: float | None = None  # candidate - baseline: negative is better
    threshold: float | None = None  # the improvement a keep needed (positive number)
    noise: float | None = (
        None  # paired: sigma_d, the std of one per-seed difference; else the baseline spread
    )
    confirmed: bool = False  # unpaired records: a marginal win that a confirmation run upheld
    pairs: int | None = None  # paired: how many seeds both ran on
    seeds: list[int] = Field(default_factory=list)  # paired: those seeds, in order
    paired_deltas: list[float] = Field(default_factory=list)  # candidate - base, seed by seed
    delta_low: float | None = None  # 95% interval of the mean paired difference (Student-t)
    delta_high: float | None = None
    noise_dof: int | None = None  # the degrees of freedom behind `noise`

    @property
    def paired(self) -> bool:
        return self.pairs is not None


class ExperimentRecord(BaseModel):
    """One line of the ledger (JSONL). kind="baseline" lines record baseline measurements."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    id: str
    kind: Literal["experiment", "baseline"] = "experiment"
    tick: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    proposer: str | None = None
    hypothesis: str = ""
    edit: dict | None = None
    parent_commit: str
    candidate_commit: str | None = None
    branch: str | None = None
    archived_ref: str | None = None  # where a discarded candidate's commit still lives
    pr_number: int | None = None
    pr_url: str | None = None
    actions_run_url: str | None = None
    patch: str = ""
    patch_sha256: str | None = None
    preset: str
    runner: str
    device: str | None = None
    seeds: list[int] = Field(default_factory=list)
    runs: list[RunOutcome] = Field(default_factory=list)
    baseline: BaselineStats | None = None
    verdict: Verdict | None = None
    merged_commit: str | None = None
    forge_error: str | None = None  # a merge/close that failed after the verdict (the verdict still stands)
    held: str | None = None  # why a keep was left for a person to merge (the verdict still stands)
    llm: LLMUsage = Field(default_factory=LLMUsage)
    gpu_seconds: float = 0.0
    cost_usd: float = 0.0
    harness_sha256: str | None = None

    def ok_values(self) -> list[float]:
        return ok_values(self.runs)
