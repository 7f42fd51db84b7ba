"""Builds the ledger, forge, runner and proposer that the config names, in one place.

The steps only see the Ledger and the Forge / Runner / Proposer interfaces; this module is the only
code that knows which concrete class stands behind each config value, which secret each one needs,
and what GitHub Actions says about the run in progress. A missing secret is an error that names the
variable and the job that should carry it.
"""

from __future__ import annotations

import os
from pathlib import Path

from autoresearch_ci.config import Config
from autoresearch_ci.ledger import Ledger


class MissingSecretError(RuntimeError):
    pass


def _secret(name: str, why: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise MissingSecretError(f"{name} is not set: {why}")
    return value


def actions_run_id() -> str | None:
    """The Actions run this process is part of (the same for every re-run attempt of its jobs)."""
    return os.environ.get("GITHUB_RUN_ID") or None


def actions_run_url() -> str | None:
    """The Actions run this process is part of (for provenance links and status details), if any."""
    server, repo, run = (
        os.environ.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")
    )
    return f"{server}/{repo}/actions/runs/{run}" if server and repo and run else None


def repo_url(cfg: Config) -> str | None:
    """The repository's page on GitHub, when the config or Actions names it (for the dashboard)."""
    slug = cfg.github.repo or os.environ.get("GITHUB_REPOSITORY")
    server = os.environ.get("GITHUB_SERVER_URL", "https://github.com")
    return f"{server}/{slug}" if slug else None


def make_ledger(cfg: Config, repo: Path) -> Ledger:
    return Ledger(repo / cfg.paths.ledger)


def make_forge(cfg: Config, repo: Path, kind: str | None = None):
    kind = kind or cfg.forge
    if kind == "local":
        from autoresearch_ci.forge.local import LocalForge

        return LocalForge(repo, base_branch=cfg.github.base_branch)
    if kind == "github":
        from autoresearch_ci.forge.github import GitHubForge

        token = _secret(
            "GITHUB_TOKEN",
            "the github forge needs the job's token (`env: GITHUB_TOKEN: ${{ github.token }}`), with "
            "the permissions the workflow gives that job",
        )
        slug = cfg.github.repo or os.environ.get("GITHUB_REPOSITORY", "")
        if not slug:
            raise MissingSecretError("set github.repo in autoresearch.toml (or run inside GitHub Actions)")
        return GitHubForge(
            slug,
            token,
            workdir=repo,
            api_url=os.environ.get("GITHUB_API_URL", cfg.github.api_url),
            base_branch=cfg.github.base_branch,
            labels=list(cfg.github.labels),
            merge_mode=cfg.github.merge_mode,
            run_url=actions_run_url(),
        )
    raise ValueError(f"unknown forge {kind!r}: choose local or github")


def make_runner(cfg: Config, repo: Path, kind: str | None = None, *, calls_file: str | Path | None = None):
    kind = kind or cfg.runner
    if kind in ("local", "self-hosted"):
        from autoresearch_ci.runners.local import LocalRunner

        return LocalRunner(repo, runner_name=kind, parallel=cfg.parallel_runs or None)
    if kind == "modal":
        from autoresearch_ci.runners.modal import ModalRunner

        return ModalRunner(
            app_name=cfg.modal.app_name,
            gpu=cfg.modal.gpu,
            timeout_margin_s=cfg.modal.timeout_margin_seconds,
            max_infra_retries=cfg.modal.infra_retries,
            calls_file=calls_file,
        )
    raise ValueError(f"unknown runner {kind!r}: choose local, self-hosted or modal")


def make_proposer(cfg: Config, kind: str | None = None, seed: int = 0):
    kind = kind or cfg.proposer
    if kind == "offline":
        from autoresearch_ci.proposers.offline import OfflineProposer
        from harness.presets import get_preset

        device = get_preset(cfg.preset).device
        return OfflineProposer(seed=seed, device=None if device == "auto" else device)
    if kind == "anthropic":
        from autoresearch_ci.proposers.anthropic import AnthropicProposer, ModelPrice

        key = _secret(
            "ANTHROPIC_API_KEY", "the anthropic proposer needs it (only the propose job carries it)"
        )
        return AnthropicProposer(
            model=cfg.llm.model,
            api_key=key,
            base_url=os.environ.get("ANTHROPIC_BASE_URL") or None,
            max_output_tokens=cfg.llm.max_output_tokens,
            max_retries=cfg.llm.max_retries,
            timeout=cfg.llm.request_timeout_seconds,
            tick_token_budget=cfg.budget.llm_tokens_per_tick,
            default_price=ModelPrice(
                input=cfg.llm.input_usd_per_mtok,
                output=cfg.llm.output_usd_per_mtok,
                cache_read=cfg.llm.cache_read_usd_per_mtok,
                cache_write=cfg.llm.cache_write_usd_per_mtok,
            ),
        )
    raise ValueError(f"unknown proposer {kind!r}: choose offline or anthropic")
