"""Every option of autoresearch-ci, resolved in one place.

The config lives in `autoresearch.toml` at the repository root, or in `[tool.autoresearch]` of
`pyproject.toml`; when both exist `autoresearch.toml` wins (it is read alone, never merged).
CLI flags and workflow inputs come last, as `overrides` ({"judge.min_effect": "0.002"} or nested
dicts). Every section forbids unknown keys and every model is frozen, so a typo is an error that
names the key, and nothing downstream can change a setting behind the loop's back.

    [judge]
    noise_multiplier = 3.0

    $ autoresearch-ci loop --repo .   # reads ./autoresearch.toml

A bad file raises ConfigError with one line per problem: the file, the key path and what is allowed.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

CONFIG_FILE = "autoresearch.toml"
PYPROJECT = "pyproject.toml"


# USD per GPU-hour on Modal. Third-party copies of modal.com/pricing, 2026 (techbytes.app "Serverless
# GPU Pricing Matrix", verified 2026-05-07; beam.cloud "Modal Pricing Explained", verified 2026-06-27):
# H100 $0.001097/s = $3.9492/h, A100-80GB $2.4984/h, L40S $1.9512/h, L4 $0.7992/h, T4 $0.5904/h.
# CPU and memory are billed on top. Check modal.com/pricing before quoting.
MODAL_GPU_USD_PER_HOUR = {"H100": 3.95, "A100-80GB": 2.50, "L40S": 1.95, "L4": 0.80, "T4": 0.59}


class ConfigError(ValueError):
    """The config could not be loaded; the message says where, what and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LLMConfig(_Section):
    """The proposer's model and what its tokens cost. There is no temperature: the proposer sends none."""

    model: str = "claude-sonnet-4-6"
    max_output_tokens: int = Field(8192, ge=256, le=128_000)
    request_timeout_seconds: float = Field(600.0, gt=0, le=3600)
    max_retries: int = Field(4, ge=0, le=20)
    # USD per million tokens for `model` (Sonnet 4.6 list prices; cache writes are the 5-minute kind,
    # 1.25x input, and reads 0.1x input). Change them with the model.
    input_usd_per_mtok: float = Field(3.0, ge=0)
    output_usd_per_mtok: float = Field(15.0, ge=0)
    cache_read_usd_per_mtok: float = Field(0.30, ge=0)
    cache_write_usd_per_mtok: float = Field(3.75, ge=0)


class JudgeConfig(_Section):
    """How a candidate must beat the baseline to be kept (see verdict.py and noise.py for the statistics).

    The base and the candidate run on the same seeds and the judge decides on the per-seed
    differences, a round of pairs at a time: a candidate is kept when the mean difference beats
    max(min_effect, t(noise_multiplier, dof) x sigma_d / sqrt(pairs)) after at least two pairs,
    discarded as soon as it is not better by futility_z standard errors, and at max_pairs at the latest.

    min_effect is the smallest improvement worth a merge, in absolute val_bpb, whatever the noise.
    0.001 is about 0.1% of karpathy's 0.998 baseline and about 3x the level below which an H100 result
    is suspect (~3e-4, karpathy/autoresearch#560); the biggest single wins of a session are ~0.01, and
    many kept steps there are 0.001-0.003, so a larger floor would throw real progress away. On noisier
    set-ups (CPU, small eval) the noise term, not this floor, sets the bar.
    """

    min_effect: float = Field(0.001, ge=0)
    # c of the keep bar, in standard errors of the mean paired difference, widened by the Student-t
    # correction on the noise estimate's dof. 2.5 keeps 0.7-1.5% of no-effect candidates with up to 4
    # pairs and a look after every round (simulation.py's tables); 2.3 lets 2-2.5% through.
    noise_multiplier: float = Field(2.5, gt=0, le=10)
    # A keep also needs the candidate's own paired t-test (its k - 1 dof) past this one-sided z: a
    # guard against a change whose effect swings with the seed more than the pooled sigma_d allows
    # (verdict.own_agrees). 1.645 halves the false keeps of such a change for ~3 points of power;
    # 0 turns it off.
    own_z: float = Field(1.645, ge=0, le=10)
    # Stop (discard) as soon as the mean paired difference is not better than -futility_z standard
    # errors: a clear loser costs one round. 0 stops only what is not better at all.
    futility_z: float = Field(0.5, ge=0, le=5)
    # The most pairs (candidate runs, and base runs on the same seeds) a candidate gets.
    max_pairs: int = Field(4, ge=2, le=8)
    # Pairs added per round, and so the looks: 0 = 2 when the runner has two or more slots of its own
    # (the local runner on a CPU-time clock), else 1 (one at a time, or Modal, which bills each run).
    pairs_per_round: int = Field(0, ge=0, le=2)
    # The smallest sigma_d the judge will believe: a lucky identical set of runs must not make the bar
    # vanish. 1e-4 is about twice the statistical floor of a 21M-token eval.
    noise_floor: float = Field(1e-4, ge=0)
    # A baseline run drifts with the machine under it (drivers, runtime-fetched kernels, Modal hosts):
    # one older than this, or measured before this many experiments were judged against its
    # train.py, is measured again on the same seed.
    baseline_max_age_hours: float = Field(24.0, gt=0)
    baseline_max_experiments: int = Field(20, ge=1)
    # Accepted so that older config files still load; unused since judging is paired and sequential
    # (confirmation runs and extra baseline seeds gave way to pairs).
    baseline_seeds: int = Field(2, ge=2, le=16)
    confirm_margin: float = Field(1.5, ge=1.0, le=10)
    noise_dof_target: int = Field(6, ge=0, le=100)


class BudgetConfig(_Section):
    """Hard caps, checked before anything is spent. "unlimited" (None) lifts a cap; 0 allows nothing.

    The defaults fit the gpu preset on a Modal H100 at a tick every 4 hours: a run takes ~7 minutes,
    a tick with its baseline and a confirmation 3-4 runs, so 4 GPU-hours (~$16) a day, and an LLM
    proposal with train.py in context and a few tool turns ~50-150k tokens (~$0.50 at Sonnet prices).
    """

    llm_tokens_per_tick: int | None = Field(300_000, ge=0)
    llm_tokens_per_day: int | None = Field(2_000_000, ge=0)
    gpu_seconds_per_day: float | None = Field(4 * 3600.0, ge=0)
    usd_per_day: float | None = Field(25.0, ge=0)

    @field_validator(
        "llm_tokens_per_tick", "llm_tokens_per_day", "gpu_seconds_per_day", "usd_per_day", mode="before"
    )
    @classmethod
    def _unlimited(cls, v: Any) -> Any:
        # TOML has no null, so a cap is lifted with the word
        return None if isinstance(v, str) and v.strip().lower() in ("unlimited", "none") else v

    # USD per GPU-hour on Modal, by the `modal.gpu` name. A table in the config adds to (or changes)
    # these prices; it does not replace the list.
    gpu_usd_per_hour: dict[str, float] = Field(default_factory=lambda: dict(MODAL_GPU_USD_PER_HOUR))

    @field_validator("gpu_usd_per_hour", mode="before")
    @classmethod
    def _add_to_known_prices(cls, v: Any) -> Any:
        return {**MODAL_GPU_USD_PER_HOUR, **v} if isinstance(v, dict) else v

    # What an hour of a local or self-hosted runner costs you (0: hardware you already pay for).
    local_usd_per_hour: float = Field(0.0, ge=0)


class PathsConfig(_Section):
    """Where the loop's files live, relative to the repository root."""

    ledger: str = "ledger/experiments.jsonl"
    results_tsv: str = "ledger/results.tsv"
    resources: str = "resources.md"
    program: str = "program.md"


class GitHubConfig(_Section):
    repo: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$")  # owner/name; GITHUB_REPOSITORY in Actions
    base_branch: str = "main"
    labels: tuple[str, ...] = ("autoresearch",)
    merge_mode: Literal["squash", "auto"] = "squash"  # squash now, or enable auto-merge and let rules decide
    api_url: str = "https://api.github.com"
    # A keep whose runs had no sandbox (metrics "isolation": "none": bubblewrap could not start) is
    # not merged by the GitHub loop unless this is true: the PR stays open for a person, with why.
    allow_unisolated_merge: bool = False
    # A candidate left without a result (its train or judge job died, or its runs were infra
    # errors) is trained again by this many later ticks, then closed with its reason.
    retrain_limit: int = Field(2, ge=0, le=10)


class ModalConfig(_Section):
    gpu: str = "H100"
    app_name: str = "autoresearch-ci"
    volume_name: str = "autoresearch-data"
    # The Modal function's timeout is the preset's hard deadline plus this margin (image start, data
    # volume mount, result upload), so Modal only ever kills a run the harness failed to stop.
    timeout_margin_seconds: int = Field(300, ge=30, le=3600)
    infra_retries: int = Field(2, ge=0, le=10)


class LearningsConfig(_Section):
    condense_every: int = Field(5, ge=1)  # rewrite resources.md's Summary after this many new verdicts


class Config(_Section):
    protected_paths: tuple[str, ...] = (
        "harness/",
        ".github/",
        "autoresearch.toml",
        "pyproject.toml",
        "autoresearch_ci/",
        "dashboard/",
        "program.md",
    )
    editable_files: tuple[str, ...] = ("train.py",)  # validated after protected_paths, which it must avoid
    preset: str = "cpu"
    runner: Literal["local", "self-hosted", "modal"] = "local"
    proposer: Literal["offline", "anthropic"] = "offline"
    forge: Literal["local", "github"] = "local"
    candidates_per_tick: int = Field(1, ge=1, le=16)
    # Local runner: runs at a time. 0 = from the machine: cores // the preset's threads on a CPU-time
    # clock (runs side by side do not take each other's budget), 1 on a wall clock or a GPU.
    parallel_runs: int = Field(0, ge=0, le=64)
    guard_command: str | None = None
    guard_timeout_seconds: float = Field(600.0, gt=0, le=3600)

    llm: LLMConfig = LLMConfig()
    judge: JudgeConfig = JudgeConfig()
    budget: BudgetConfig = BudgetConfig()
    paths: PathsConfig = PathsConfig()
    github: GitHubConfig = GitHubConfig()
    modal: ModalConfig = ModalConfig()
    learnings: LearningsConfig = LearningsConfig()

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        from harness.presets import PRESETS

        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; allowed: {', '.join(PRESETS)}")
        return v

    @field_validator("editable_files")
    @classmethod
    def _editable_not_protected(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one editable file is needed")
        for p in v:
            if p.startswith("/") or ".." in Path(p).parts:
                raise ValueError(f"{p!r} must be a path relative to the repository root")
            for q in info.data.get("protected_paths", ()):
                if p == q or p.startswith(q.rstrip("/") + "/"):
                    raise ValueError(f"editable file {p!r} lies under protected path {q!r}")
        return v


# ----------------------------------------------------------------------------------------------
# loading


def find_config_file(root: Path) -> tuple[Path | None, dict]:
    """The file that holds the config and its raw table: autoresearch.toml first, then pyproject."""
    own = root / CONFIG_FILE
    if own.is_file():
        return own, _read_toml(own)
    py = root / PYPROJECT
    if py.is_file():
        table = _read_toml(py).get("tool", {}).get("autoresearch")
        if table is not None:
            return py, table
    return None, {}


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:  # tomllib wants bytes
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def _expand(overrides: dict) -> dict:
    """{"judge.min_effect": x, "llm": {"model": y}} -> nested dicts; None values mean "flag not given"."""
    out: dict = {}
    for key, value in overrides.items():
        if value is None:
            continue
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key}: {p} is not a section")
        if isinstance(value, dict):
            node.setdefault(parts[-1], {}).update(_expand(value))
        else:
            node[parts[-1]] = value
    return out


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _has_path(tree: dict, loc: tuple) -> bool:
    node: Any = tree
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The section model that owns the key at `loc` (for "allowed keys" hints)."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _describe(err: dict) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc)
        allowed = list(model.model_fields) if model else []
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        text = "unknown key"
        if hint:
            text += f" (did you mean {hint[0]!r}?)"
        return text + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "required"
    if kind == "value_error":  # our own validators already name the value and the choices
        return err["msg"].removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and loc == ("github", "repo"):
        return f"must look like owner/name (got {err.get('input')!r})"
    msg = err["msg"].replace("Input should be", "must be").replace("String should", "must")
    return f"{msg} (got {err.get('input')!r})"


def format_validation_error(e: ValidationError, source: str, overrides: dict | None = None) -> str:
    lines = []
    for err in e.errors():
        loc = tuple(str(p) for p in err["loc"])
        where = "overrides" if overrides and _has_path(overrides, loc) else source
        key = ".".join(loc) or "(top level)"
        lines.append(f"{where}: {key}: {_describe(err)}")
    return "invalid config:\n  " + "\n  ".join(lines)


def load_config(root: Path | str = ".", overrides: dict | None = None) -> Config:
    """The config for the repository at `root`, with CLI / workflow overrides applied last."""
    root = Path(root)
    path, data = find_config_file(root)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: [tool.autoresearch] must be a table")
    extra = _expand(overrides or {})
    merged = _merge(data, extra)
    source = str(path) if path else "defaults"
    if path is not None and path.name == PYPROJECT:
        source += " [tool.autoresearch]"
    try:
        return Config.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, extra)) from None
