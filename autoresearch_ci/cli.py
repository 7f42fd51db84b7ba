"""`autoresearch-ci`: the local loop, and each single step that a CI job calls.

    autoresearch-ci init DIR                 a new research repository from this template
    autoresearch-ci loop --iterations N      the whole loop on this machine (local git + local runner)
    autoresearch-ci doctor                   the preflight: what a fork still needs, and how to fix it
    autoresearch-ci budget-check             CI: may this tick spend anything?
    autoresearch-ci settle --out carry.json  CI: earlier ticks' candidates without a result: retrain or close
    autoresearch-ci propose --out tick.json  CI job 1 (LLM key): proposals -> branches + PRs
    autoresearch-ci guard --tick tick.json   CI (no secret): the guard command on each candidate
    autoresearch-ci prepare-data             CI (self-hosted GPU): the preset's data, once
    autoresearch-ci train --tick tick.json   CI job 2 (GPU): baseline + candidates + confirmations
    autoresearch-ci cancel-modal --calls F   CI: cancel the Modal calls a cancelled train job left
    autoresearch-ci judge --tick ... --results ...   CI job 3 (write token): verdicts, merges, ledger
    autoresearch-ci publish --out site       CI job 4 (pages): the dashboard
    autoresearch-ci status                   a table of recent experiments and the best so far
    autoresearch-ci dashboard build|serve    the dashboard, locally
    autoresearch-ci ledger check|repair|export

Options are resolved once: autoresearch.toml (or [tool.autoresearch]) then the flags given here.
Each command builds its backends (backends.py), calls one step (steps/) and prints what report/
renders. Exit codes: 0 done, 1 a step refused (budget, guard, missing secret), 2 bad usage or config.
Here: the parser, `main` and the local commands; the commands of the CI jobs are in cli_ci.py, and
what every command shares (the console, the config from the flags, the job's outputs and summary)
in cli_common.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rich.markup import escape

from autoresearch_ci.backends import MissingSecretError, make_ledger, repo_url
from autoresearch_ci.cli_ci import (
    cmd_budget_check,
    cmd_cancel_modal,
    cmd_doctor,
    cmd_guard,
    cmd_judge,
    cmd_prepare_data,
    cmd_propose,
    cmd_settle,
    cmd_train,
)
from autoresearch_ci.cli_common import _config, console
from autoresearch_ci.config import Config, ConfigError
from autoresearch_ci.ledger import LedgerCorruptError
from autoresearch_ci.report import tables

TEMPLATE_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_FILES = ["train.py", "program.md", "resources.md"]


# ----------------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    dest = Path(args.dir).resolve()
    if (dest / ".git").exists():
        console.print(f"{dest} is already a git repository; nothing to do")
        return 0
    missing = [f for f in TEMPLATE_FILES if not (TEMPLATE_ROOT / f).exists()]
    if missing:
        console.print(
            f"[red]the template files {missing} are not next to the installed package ({TEMPLATE_ROOT}); "
            "install autoresearch-ci from a clone with `pip install -e .`"
        )
        return 2
    dest.mkdir(parents=True, exist_ok=True)
    for name in TEMPLATE_FILES:
        shutil.copy2(TEMPLATE_ROOT / name, dest / name)
    (dest / "autoresearch.toml").write_text(
        f'# Settings for this research repository; see the README for every key.\npreset = "{args.preset}"\n'
        'runner = "local"\nproposer = "offline"\nforge = "local"\ncandidates_per_tick = 1\n',
        encoding="utf-8",
    )
    (dest / ".gitignore").write_text("__pycache__/\n", encoding="utf-8")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "autoresearch-ci",
        "GIT_AUTHOR_EMAIL": "autoresearch-ci@localhost",
        "GIT_COMMITTER_NAME": "autoresearch-ci",
        "GIT_COMMITTER_EMAIL": "autoresearch-ci@localhost",
    }
    for cmd in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["commit", "-q", "-m", "autoresearch: initial template"],
    ):
        subprocess.run(["git", "-C", str(dest), *cmd], check=True, capture_output=True, timeout=60, env=env)
    console.print(f"initialised a research repository in {dest}")
    return 0


def cmd_loop(args: argparse.Namespace) -> int:
    from autoresearch_ci.steps.loop import run_loop

    cfg, repo = _config(args)
    run_loop(cfg, repo, args.iterations, max_minutes=args.max_minutes, seed=args.seed, console=console)
    _print_status(cfg, repo, limit=args.iterations * cfg.candidates_per_tick + 5)
    return 0


def _print_status(cfg: Config, repo: Path, limit: int) -> None:
    ledger = make_ledger(cfg, repo)
    print(tables.status_table(ledger.experiments()[-limit:], ledger.best()))


def cmd_status(args: argparse.Namespace) -> int:
    cfg, repo = _config(args)
    _print_status(cfg, repo, args.limit)
    return 0


def _build_site(args: argparse.Namespace) -> Path:
    from dashboard.build import build_site

    cfg, repo = _config(args)
    return build_site(
        repo / cfg.paths.ledger, repo / cfg.paths.resources, Path(args.out), repo_url=repo_url(cfg)
    )


def cmd_publish(args: argparse.Namespace) -> int:
    console.print(f"dashboard written to {_build_site(args)}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    if args.action == "build":
        return cmd_publish(args)
    from dashboard.serve import serve

    serve(_build_site(args), host=args.host, port=args.port)
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    cfg, repo = _config(args)
    ledger = make_ledger(cfg, repo)
    if args.action == "check":
        records, problems = ledger.read(strict=False)
        console.print(f"{len(records)} record(s), {len(problems)} problem(s)")
        for p in problems:
            console.print(f"[red]{p}")
        return 1 if problems else 0
    if args.action == "repair":
        console.print(ledger.repair())
        return 0
    sys.stdout.write(ledger.export_tsv())
    return 0


# ----------------------------------------------------------------------------------------------


def doctor_areas() -> tuple[str, ...]:
    from autoresearch_ci.doctor import AREAS

    return AREAS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autoresearch-ci", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--repo", default=".", help="the research repository (default: the current directory)"
        )
        sp.add_argument("--preset", help="override the preset (gpu, cpu, tiny)")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument(
            "--base-branch", help="the branch the research lives on (override [github] base_branch)"
        )

    runners = ["local", "modal", "self-hosted"]

    sp = sub.add_parser("init", help="create a research repository from this template")
    sp.add_argument("dir")
    sp.add_argument("--preset", default="cpu")
    sp.set_defaults(func=cmd_init)

    sp = sub.add_parser("loop", help="run the loop locally for N iterations")
    common(sp)
    sp.add_argument("--iterations", type=int, default=3)
    sp.add_argument("--max-minutes", type=float, default=None)
    sp.add_argument("--proposer", choices=["offline", "anthropic"])
    sp.add_argument("--runner", choices=["local", "modal", "self-hosted"])
    sp.add_argument("--candidates", type=int)
    sp.set_defaults(func=cmd_loop)

    sp = sub.add_parser("doctor", help="the preflight: secrets, settings, Modal, the GPU box, with fixes")
    common(sp)
    sp.add_argument("--runner", choices=runners)
    sp.add_argument("--proposer", choices=["offline", "anthropic"])
    sp.add_argument("--only", help=f"comma-separated areas to check (of: {', '.join(doctor_areas())})")
    sp.add_argument(
        "--pages", default="true", help="false: the dashboard is not deployed (AUTORESEARCH_PAGES)"
    )
    sp.add_argument(
        "--ci",
        action="store_true",
        help="in the workflow: secrets come as SECRET_SET_<NAME>=true|false, this machine is the runner",
    )
    sp.set_defaults(func=cmd_doctor)

    sp = sub.add_parser("budget-check", help="CI: refuse the tick when a budget would be exceeded")
    common(sp)
    sp.add_argument("--planned-candidates", type=int)
    sp.add_argument("--runner", choices=runners, help="the runner whose device time is priced")
    sp.set_defaults(func=cmd_budget_check)

    sp = sub.add_parser("settle", help="CI: retrain or close earlier ticks' candidates left without a result")
    common(sp)
    sp.add_argument("--forge", choices=["local", "github"])
    sp.add_argument("--runner", choices=runners)
    sp.add_argument("--out", default="tick/carry.json")
    sp.set_defaults(func=cmd_settle)

    sp = sub.add_parser("propose", help="CI: propose candidates, push branches, open PRs")
    common(sp)
    sp.add_argument("--forge", choices=["local", "github"])
    sp.add_argument("--proposer", choices=["offline", "anthropic"])
    sp.add_argument("--runner", choices=runners)
    sp.add_argument("--candidates", type=int)
    sp.add_argument("--carry", help="settle's carry.json: earlier candidates to train again")
    sp.add_argument(
        "--defer-guard",
        action="store_true",
        help="leave the guard command to a job without secrets (`autoresearch-ci guard`)",
    )
    sp.add_argument("--out", default="tick/tick.json")
    sp.set_defaults(func=cmd_propose)

    sp = sub.add_parser("guard", help="CI (no secret): the guard command on each candidate")
    common(sp)
    sp.add_argument("--tick", default="tick/tick.json")
    sp.add_argument("--out", default="tick/guard.json")
    sp.set_defaults(func=cmd_guard)

    sp = sub.add_parser("prepare-data", help="prepare the preset's data (once; quick when it is there)")
    common(sp)
    sp.set_defaults(func=cmd_prepare_data)

    sp = sub.add_parser("train", help="CI: run baseline, candidates and confirmations")
    common(sp)
    sp.add_argument("--tick", default="tick/tick.json")
    sp.add_argument("--guard", help="guard.json of the guard job, when it ran")
    sp.add_argument("--runner", choices=runners)
    sp.add_argument(
        "--deadline-minutes",
        type=float,
        help="finish within this many minutes (inside the job's timeout): no wait goes past it",
    )
    sp.add_argument("--calls-file", help="Modal: journal of spawned call ids (for cancel-modal)")
    sp.add_argument("--out", default="tick/results.json")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("cancel-modal", help="CI: cancel the Modal calls a train job journalled")
    common(sp)
    sp.add_argument("--calls", default="tick/modal-calls.jsonl")
    sp.set_defaults(func=cmd_cancel_modal)

    sp = sub.add_parser("judge", help="CI: verdicts, merge or close, ledger and learnings")
    common(sp)
    sp.add_argument("--forge", choices=["local", "github"])
    sp.add_argument("--tick", default="tick/tick.json")
    sp.add_argument("--guard", help="guard.json of the guard job, when it ran")
    sp.add_argument("--results", default="tick/results.json")
    sp.set_defaults(func=cmd_judge)

    sp = sub.add_parser("publish", help="build the dashboard site")
    common(sp)
    sp.add_argument("--out", default="site")
    sp.set_defaults(func=cmd_publish)

    sp = sub.add_parser("status", help="recent experiments and the best so far")
    common(sp)
    sp.add_argument("--limit", type=int, default=20)
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("dashboard", help="build or serve the dashboard locally")
    common(sp)
    sp.add_argument("action", choices=["build", "serve"])
    sp.add_argument("--out", default="site")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, default=8000)
    sp.set_defaults(func=cmd_dashboard)

    sp = sub.add_parser("ledger", help="check, repair or export the ledger")
    common(sp)
    sp.add_argument("action", choices=["check", "repair", "export"])
    sp.set_defaults(func=cmd_ledger)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {escape(str(exc))}")
        return 2
    except (MissingSecretError, LedgerCorruptError) as exc:
        console.print(f"[red]{escape(str(exc))}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
