"""`autoresearch-ci doctor`: the preflight. What a fork needs before a tick can run, checked without
spending GPU time or LLM tokens, each failure with what to click or run.

    run_checks(cfg, ...) -> list[Check]        render_markdown(checks) / render_text(checks)

This module has the checks' shape (Check, Context), the config and secrets checks, and the report;
the GitHub checks are in doctor_github.py, Modal's and the self-hosted machine's in
doctor_machines.py.

A fork owner runs it once on their machine (`autoresearch-ci doctor`, with `gh auth login` done or
GITHUB_TOKEN set); the workflow runs it first in every tick, in three places so that no job holds a
secret it does not need:
- `preflight` (GITHUB_TOKEN with read scopes and the pull-requests write of doctor_github.py's
  probe; no secret): the config, which secrets the chosen runner and proposer need (each passed in
  as a boolean, `secrets.X != ''`, never as its value), and the repository: the label, Pages, what
  would stop the judge's ledger push to main, auto-merge's requirements, and whether GitHub Actions
  may open PRs;
- `preflight-modal` (the Modal token only): the token, the deployed app and its harness hash;
- `preflight-self-hosted` (on the GPU machine, no secret): the GPU, bubblewrap, the offline corpus and data.
A failure fails its job, so the tick opens no PR; the report goes to the job summary.

Areas and states. Each Check is `ok`, `fail` (the tick would fail or mislead: stop), `warn` (it will
work, with a consequence worth knowing), `manual` ("cannot check: do X by hand": GITHUB_TOKEN cannot
read the repository's Actions settings or its secrets; only a token of the owner's can, and doctor
uses one when it has it), or `skip`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from autoresearch_ci.config import Config

OK, FAIL, WARN, MANUAL, SKIP = "ok", "fail", "warn", "manual", "skip"
ICON = {OK: "✅ ok", FAIL: "❌ fail", WARN: "⚠️ warn", MANUAL: "✋ cannot check", SKIP: "– skipped"}
AREAS = ("config", "secrets", "github", "modal", "self-hosted")

SECRET_HELP = {
    "ANTHROPIC_API_KEY": "console.anthropic.com → API keys → Create key",
    "MODAL_TOKEN_ID": "modal.com → Settings → API Tokens → New token (or `token_id` in ~/.modal.toml)",
    "MODAL_TOKEN_SECRET": "the same Modal token's secret (`token_secret` in ~/.modal.toml)",
}


@dataclass
class Check:
    area: str
    name: str
    state: str
    detail: str
    fix: str = ""


@dataclass
class Context:
    """What the checks know about where they run."""

    runner: str  # modal | self-hosted | local
    proposer: str  # anthropic | offline
    pages: bool = True
    secrets: Mapping[str, bool | None] = field(default_factory=dict)  # name -> set? (None: unknown)
    slug: str | None = None
    github: object | None = None  # a GitHubAPI, or None when there is no token
    here_is_runner: bool = False  # this machine is the self-hosted runner


# ----------------------------------------------------------------------------------------------
# secrets, config


def needed_secrets(runner: str, proposer: str) -> list[str]:
    names = ["ANTHROPIC_API_KEY"] if proposer == "anthropic" else []
    if runner == "modal":
        names += ["MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"]
    return names


def check_secrets(ctx: Context) -> list[Check]:
    out = []
    for name in needed_secrets(ctx.runner, ctx.proposer):
        why = f"the {'proposer' if name.startswith('ANTHROPIC') else 'Modal runner'} needs it"
        fix = (
            f"Settings → Secrets and variables → Actions → New repository secret → {name} "
            f"(or `gh secret set {name}`); {SECRET_HELP[name]}"
        )
        have = ctx.secrets.get(name)
        if have is True:
            out.append(Check("secrets", name, OK, "set"))
        elif have is False:
            out.append(Check("secrets", name, FAIL, f"not set: {why}", fix))
        else:
            out.append(
                Check(
                    "secrets",
                    name,
                    MANUAL,
                    f"cannot check from here ({why})",
                    f"make sure it is set: `gh secret list`; to set it: {fix}",
                )
            )
    if not out:
        out.append(Check("secrets", "secrets", OK, f"none needed for {ctx.proposer} + {ctx.runner}"))
    return out


def check_config(cfg: Config, ctx: Context) -> list[Check]:
    from autoresearch_ci import budget

    out = [
        Check(
            "config",
            "autoresearch.toml",
            OK,
            f"preset {cfg.preset}, runner {ctx.runner}, proposer {ctx.proposer}",
        )
    ]
    try:
        rate = budget.gpu_usd_per_hour(cfg, ctx.runner)
        out.append(Check("config", "GPU price", OK, f"${rate:.2f} per device-hour for the budget caps"))
    except ValueError as e:
        out.append(
            Check("config", "GPU price", FAIL, str(e), "add the GPU type to [budget] gpu_usd_per_hour")
        )
    return out


# ----------------------------------------------------------------------------------------------
# all of it


def run_checks(
    cfg: Config, ctx: Context, areas: tuple[str, ...] = AREAS, modal_lookup: Callable | None = None
) -> list[Check]:
    # Imported here, not at the top: those modules take Check and Context from this one.
    from autoresearch_ci.doctor_github import check_github
    from autoresearch_ci.doctor_machines import check_modal, check_self_hosted

    out: list[Check] = []
    if "config" in areas:
        out += check_config(cfg, ctx)
    if "secrets" in areas:
        out += check_secrets(ctx)
    if "github" in areas:
        out += check_github(cfg, ctx)
    if "modal" in areas:
        if ctx.runner != "modal":
            out.append(Check("modal", "Modal", SKIP, f"the runner is {ctx.runner}"))
        else:
            out += check_modal(cfg, modal_lookup)
    if "self-hosted" in areas:
        if ctx.runner != "self-hosted":
            out.append(Check("self-hosted", "self-hosted runner", SKIP, f"the runner is {ctx.runner}"))
        elif ctx.here_is_runner:
            out += check_self_hosted(cfg)
        else:
            out.append(
                Check(
                    "self-hosted",
                    "self-hosted runner",
                    MANUAL,
                    "this is not the GPU machine",
                    "run `autoresearch-ci doctor --only self-hosted` on it (the workflow's "
                    "preflight-self-hosted job does, every tick)",
                )
            )
    return out


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.state == FAIL]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_markdown(checks: list[Check], title: str = "autoresearch-ci doctor") -> str:
    bad = failed(checks)
    head = f"### {title}: {len(bad)} problem(s), the tick stops here" if bad else f"### {title}: ready"
    rows = ["| area | check | result | detail | what to do |", "| --- | --- | --- | --- | --- |"]
    for c in checks:
        rows.append(f"| {c.area} | {_cell(c.name)} | {ICON[c.state]} | {_cell(c.detail)} | {_cell(c.fix)} |")
    return head + "\n\n" + "\n".join(rows) + "\n"


def render_text(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"[{c.state:>6}] {c.area}: {c.name}: {c.detail}")
        if c.fix and c.state in (FAIL, WARN, MANUAL):
            lines.append(f"         → {c.fix}")
    bad = failed(checks)
    lines.append(f"{len(bad)} problem(s): the tick would stop" if bad else "ready")
    return "\n".join(lines)


def secrets_from_env(names: list[str], env: Mapping[str, str] = os.environ) -> dict[str, bool | None]:
    """CI: the workflow passes `SECRET_SET_<NAME>: ${{ secrets.<NAME> != '' }}` (a boolean, never the
    value) for each secret a tick may need."""
    out: dict[str, bool | None] = {}
    for n in names:
        v = env.get(f"SECRET_SET_{n}")
        out[n] = None if v is None else v.strip().lower() == "true"
    return out
