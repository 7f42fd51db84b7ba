"""The commands of the CI jobs: one per job of .github/workflows/autoresearch.yml (doctor,
budget-check, settle, propose, guard, prepare-data, train, cancel-modal, judge). Each reads what
the job before it wrote (tick.json, guard.json, results.json), runs one step (steps/) and writes
its JSON, its GITHUB_OUTPUT values and its job summary. Apart from cli.py, which registers them
with the parser, because they are most of the CLI's code. (publish, the pages job's, is
`dashboard build` under another name and stays beside it in cli.py.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from autoresearch_ci import budget as budget_mod
from autoresearch_ci.backends import actions_run_id, make_forge, make_ledger, make_proposer, make_runner
from autoresearch_ci.cli_common import (
    _config,
    _gpu_rate,
    _load_guard,
    _out,
    _summary,
    _write_json,
    _write_output,
    console,
)
from autoresearch_ci.config import Config
from autoresearch_ci.report import tables
from autoresearch_ci.steps.state import TickResults, TickState


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
    from autoresearch_ci import doctor, doctor_github

    cfg, repo = _config(args)
    areas = tuple(a.strip() for a in args.only.split(",")) if args.only else doctor.AREAS
    bad = [a for a in areas if a not in doctor.AREAS]
    if bad:
        console.print(f"[red]unknown area(s) {bad}: choose from {', '.join(doctor.AREAS)}")
        return 2
    api = _doctor_github(cfg, args) if "github" in areas or (not args.ci and "secrets" in areas) else None
    runner, proposer = cfg.runner, cfg.proposer
    if not args.ci:  # on your machine: what the workflow will use, not the local loop's defaults
        runner, proposer = doctor_github.workflow_choices(api, args.runner, args.proposer)
        console.print(
            f"checking for runner {runner} and proposer {proposer} (--runner / --proposer to choose)"
        )
    names = doctor.needed_secrets(runner, proposer)
    if args.ci:
        secrets = doctor.secrets_from_env(names)
    else:
        secrets = doctor_github.secrets_from_github(api, names) if api is not None else dict.fromkeys(names)
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
    from harness.bytecode import warm_for_preset
    from harness.data import prepare
    from harness.protocol import trusted_pycache_dir

    cfg, _ = _config(args)
    data = prepare(cfg.preset, progress=True)
    console.print(f"prepared {data.describe()} in {data.dir}")
    # Into the directory the runner's harness processes get (runners/process.py: harness_env), so
    # that the job's first run does not compile what its sandboxes import. The harness's lines start
    # with "[harness]", which is not rich markup.
    warm_for_preset(cfg.preset, trusted_pycache_dir(), log=lambda line: console.print(line, markup=False))
    return 0


def cmd_cancel_modal(args: argparse.Namespace) -> int:
    from autoresearch_ci.runners.modal_calls import cancel_calls, read_call_ids

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
