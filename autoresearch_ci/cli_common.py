"""What every command of the CLI (cli.py, cli_ci.py) shares: one console, the config from the flags,
the GitHub job's outputs and step summary, and the JSON files the CI jobs hand each other. A module
of its own so that cli_ci.py, which holds most of the commands, need not import cli.py, which
imports it to register them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console

from autoresearch_ci import budget as budget_mod
from autoresearch_ci.config import Config, ConfigError, load_config
from autoresearch_ci.steps.state import GuardResults

console = Console(stderr=False)


def _overrides(args: argparse.Namespace) -> dict:
    out = {}
    for key in ("preset", "runner", "proposer", "forge"):
        value = getattr(args, key, None)
        if value:
            out[key] = value
    if getattr(args, "candidates", None):
        out["candidates_per_tick"] = args.candidates
    if getattr(args, "base_branch", None):
        out["github.base_branch"] = args.base_branch
    return out


def _config(args: argparse.Namespace) -> tuple[Config, Path]:
    repo = Path(args.repo).resolve()
    return load_config(repo, _overrides(args)), repo


def _write_output(name: str, value: str) -> None:
    path = os.environ.get("GITHUB_OUTPUT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{name}={value}\n")


def _summary(markdown: str) -> None:
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown.rstrip() + "\n\n")


def _gpu_rate(cfg: Config, runner: str | None) -> float:
    """$ per device-second for the runner, for the cost of each record (a ConfigError when unpriced)."""
    try:
        return budget_mod.gpu_usd_per_second(cfg, runner)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _load_guard(path: str | None) -> GuardResults | None:
    """guard.json when the guard job ran (its artifact was downloaded), else None."""
    if not path or not Path(path).exists():
        return None
    return GuardResults.model_validate_json(Path(path).read_text(encoding="utf-8"))


def _write_json(path: str, text: str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def _out(text: str) -> None:
    """Text as it is: a markdown table's "[#3](url)" links and a hypothesis's brackets are not rich
    markup, and a table is not wrapped at the terminal's (or a CI log's 80-column) width."""
    console.out(text, highlight=False)
