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
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from autoresearch_ci import budget as budget_mod
from autoresearch_ci.backends import (
    MissingSecretError,
    actions_run_id,
    make_forge,
    make_ledger,
    make_proposer,
    make_runner,
    repo_url,
)
from autoresearch_ci.config import Config, ConfigError, load_config
from autoresearch_ci.ledger import LedgerCorruptError
from autoresearch_ci.report import tables
from autoresearch_ci.steps.state import GuardResults, TickResults, TickState

TEMPLATE_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_FILES = ["train.py", "program.md", "resources.md"]

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


def cmd_budget_check(args: argparse.Namespace) -> int:
    cfg, repo = _config(args)
    planned = args.planned_candidates or cfg.candidates_per_tick
    decision = budget_mod.check(
        cfg,
        make_ledger(cfg, repo),
        planned_runs=planned + cfg.judge.baseline_seeds,
        planned_llm_tokens=cfg.budget.llm_tokens_per_tick,
        runner=cfg.runner,  # a Modal tick's GPU time is priced at Modal's rate, not the local runner's $0
    )
    _write_output("go", "true" if decision.ok else "false")
    _summary(tables.budget_summary(decision))
    _out(decision.table)
    _out(("go: " if decision.ok else "stop: ") + decision.reason)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from autoresearch_ci import doctor

    cfg, repo = _config(args)
    areas = tuple(a.strip() for a in args.only.split(",")) if args.only else doctor.AREAS
    bad = [a for a in areas if a not in doctor.AREAS]
    if bad:
        console.print(f"[red]unknown area(s) {bad}: choose from {', '.join(doctor.AREAS)}")
        return 2
    api = _doctor_github(cfg, args) if "github" in areas or (not args.ci and "secrets" in areas) else None
    runner, proposer = cfg.runner, cfg.proposer
    if not args.ci:  # on your machine: what the workflow will use, not the local loop's defaults
        runner, proposer = doctor.workflow_choices(api, args.runner, args.proposer)
        console.print(
            f"checking for runner {runner} and proposer {proposer} (--runner / --proposer to choose)"
        )
    names = doctor.needed_secrets(runner, proposer)
    if args.ci:
        secrets = doctor.secrets_from_env(names)
    else:
        secrets = doctor.secrets_from_github(api, names) if api is not None else dict.fromkeys(names)
    ctx = doctor.Context(
        runner=runner,
        proposer=proposer,
        pages=args.pages != "false",
        secrets=secrets,
        github=api,
        here_is_runner=args.ci or args.only == "self-hosted",
    )
    checks = doctor.run_checks(cfg, ctx, areas)
    _summary(doctor.render_markdown(checks))
    _out(doctor.render_text(checks))
    ok = not doctor.failed(checks)
    _write_output("ok", "true" if ok else "false")
    _write_output("runner", runner)
    return 0 if ok else 1


def _doctor_github(cfg: Config, args: argparse.Namespace):
    """The GitHub client doctor asks with: the job's GITHUB_TOKEN in CI; locally GITHUB_TOKEN, GH_TOKEN
    or the GitHub CLI's own (`gh auth token`). None when there is no token or no repository name."""
    from autoresearch_ci.forge.github_api import GitHubAPI

    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    if not token and not args.ci and shutil.which("gh"):
        proc = subprocess.run(["gh", "auth", "token"], capture_output=True, text=True, timeout=30)
        token = proc.stdout.strip() if proc.returncode == 0 else None
    slug = cfg.github.repo or os.environ.get("GITHUB_REPOSITORY") or _origin_slug(Path(args.repo))
    if not token or not slug:
        return None
    return GitHubAPI(
        slug,
        token,
        os.environ.get("GITHUB_API_URL", cfg.github.api_url),
        timeout=30,
        retries=3,
        backoff=1.0,
        max_rate_limit_wait=120,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )


def _origin_slug(repo: Path) -> str | None:
    """owner/name of the checkout's `origin` on GitHub, if it is one."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "remote", "get-url", "origin"], capture_output=True, text=True, timeout=30
    )
    url = proc.stdout.strip().removesuffix(".git")
    for head in ("https://github.com/", "git@github.com:", "ssh://git@github.com/"):
        if url.startswith(head):
            return url[len(head) :]
    return None


def cmd_settle(args: argparse.Namespace) -> int:
    from autoresearch_ci.steps.settle import settle, tick_ids

    cfg, repo = _config(args)
    forge = make_forge(cfg, repo)
    ids = tick_ids(forge, actions_run_id())
    settled = settle(
        cfg,
        forge,
        make_ledger(cfg, repo),
        ids,
        progress=console.print,
        gpu_usd_per_second=_gpu_rate(cfg, cfg.runner),
    )
    out = _write_json(args.out, settled.model_dump_json(indent=2))
    _summary(tables.settled_summary(settled))
    console.print(
        f"wrote {out}: {len(settled.carried)} candidate(s) trained again, {len(settled.closed)} closed"
    )
    return 0


def cmd_propose(args: argparse.Namespace) -> int:
    from autoresearch_ci.steps.propose import propose
    from autoresearch_ci.steps.settle import Settled, TickIds, tick_ids

    cfg, repo = _config(args)
    forge = make_forge(cfg, repo)
    ids = tick_ids(forge, actions_run_id())
    carried = []
    if args.carry and Path(args.carry).exists():
        settled = Settled.model_validate_json(Path(args.carry).read_text(encoding="utf-8"))
        carried = settled.carried
        if ids.run_id is None:
            ids = TickIds(settled.tick_id)
    state = propose(
        cfg,
        forge,
        make_proposer(cfg, seed=args.seed),
        make_ledger(cfg, repo),
        cfg.runner,
        candidates=args.candidates,
        seed=args.seed,
        progress=console.print,
        ids=ids,
        carried=carried,
        defer_guard_command=args.defer_guard,
    )
    out = _write_json(args.out, state.model_dump_json(indent=2))
    _summary(tables.proposals_summary(state))
    _write_output("runnable", str(len(state.runnable()) + len(state.baseline_seeds_needed)))
    _write_output("guard", "true" if any(c.guard_pending for c in state.candidates) else "false")
    console.print(
        f"wrote {out}: {len(state.runnable())} runnable candidate(s), "
        f"{len(state.baseline_seeds_needed)} baseline run(s) needed"
    )
    return 0


def cmd_guard(args: argparse.Namespace) -> int:
    from autoresearch_ci.steps.guard import run_guard_commands

    cfg, repo = _config(args)
    state = TickState.model_validate_json(Path(args.tick).read_text(encoding="utf-8"))
    results = run_guard_commands(cfg, state, repo, progress=console.print)
    out = _write_json(args.out, results.model_dump_json(indent=2))
    failed = [k for k, v in results.results.items() if not v.ok]
    _summary(tables.guard_summary(results))
    console.print(f"wrote {out}: {len(results.results)} candidate(s), {len(failed)} failed the guard command")
    return 0


def cmd_prepare_data(args: argparse.Namespace) -> int:
    from harness.data import prepare

    cfg, _ = _config(args)
    data = prepare(cfg.preset, progress=True)
    console.print(f"prepared {data.describe()} in {data.dir}")
    return 0


def cmd_cancel_modal(args: argparse.Namespace) -> int:
    from autoresearch_ci.runners.modal import cancel_calls, read_call_ids

    ids = read_call_ids(args.calls)
    done = cancel_calls(ids) if ids else []
    console.print(f"cancelled {len(done)} of {len(ids)} Modal call(s) listed in {args.calls}")
    return 0


def _interrupted(signum, frame):  # SIGTERM as SIGINT: a cancelled job's step gets both, in turn
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_train(args: argparse.Namespace) -> int:
    from autoresearch_ci.runners.deadline import minutes_from_now, within
    from autoresearch_ci.steps.train import train

    cfg, repo = _config(args)
    state = TickState.model_validate_json(Path(args.tick).read_text(encoding="utf-8"))
    state.apply_guard(_load_guard(args.guard))
    # The runner that trains must be the one the tick planned for: baselines are per runner.
    runner = make_runner(cfg, repo, args.runner or state.runner, calls_file=args.calls_file)
    if runner.name != state.runner:
        console.print(f"[red]this tick was planned for runner {state.runner!r}, not {runner.name!r}")
        return 1
    bounded = within(runner, minutes_from_now(args.deadline_minutes))
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        results = train(cfg, state, bounded, make_ledger(cfg, repo), progress=console.print)
    except KeyboardInterrupt:
        cancel = getattr(runner, "cancel_all", None)
        cancelled = cancel() if cancel else []
        console.print(f"[red]interrupted: cancelled {len(cancelled)} run(s) still in flight")
        sys.stdout.flush()
        sys.stderr.flush()
        # Now, not after the worker threads: one may be sleeping out a retry's backoff, and a
        # cancelled job has seconds before GitHub kills the step.
        os._exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    out = _write_json(args.out, results.model_dump_json(indent=2))
    _summary(tables.training_summary(results.outcomes))
    console.print(f"wrote {out}: {len(results.outcomes)} run(s)")
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    from autoresearch_ci.steps.judge import judge

    cfg, repo = _config(args)
    state = TickState.model_validate_json(Path(args.tick).read_text(encoding="utf-8"))
    state.apply_guard(_load_guard(args.guard))
    results = TickResults.model_validate_json(Path(args.results).read_text(encoding="utf-8"))
    forge = make_forge(cfg, repo)
    summarizer = None
    if cfg.proposer == "anthropic" and os.environ.get("ANTHROPIC_API_KEY"):
        summarizer = getattr(make_proposer(cfg), "summarize_for_learnings", None)
    records = judge(
        cfg,
        state,
        results,
        forge,
        make_ledger(cfg, repo),
        summarizer=summarizer,
        progress=console.print,
        gpu_usd_per_second=_gpu_rate(cfg, state.runner),
    )
    table = tables.render_results_table([r for r in records if r.kind == "experiment"])
    _summary(tables.verdicts_summary(state.tick_id, table))
    _out(table)
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
