"""`autoresearch-ci doctor`: the preflight. What a fork needs before a tick can run, checked without
spending GPU time or LLM tokens, each failure with what to click or run.

    run_checks(cfg, ...) -> list[Check]        render_markdown(checks) / render_text(checks)

A fork owner runs it once on their machine (`autoresearch-ci doctor`, with `gh auth login` done or
GITHUB_TOKEN set); the workflow runs it first in every tick, in three places so that no job holds a
secret it does not need:
- `preflight` (GITHUB_TOKEN with read scopes and the pull-requests write of the probe below; no
  secret): the config, which secrets the chosen runner and proposer need (each passed in as a boolean,
  `secrets.X != ''`, never as its value), and the repository: the label, Pages, what would stop the
  judge's ledger push to main, auto-merge's requirements, and whether GitHub Actions may open PRs;
- `preflight-modal` (the Modal token only): the token, the deployed app and its harness hash;
- `preflight-self-hosted` (on the GPU machine, no secret): the GPU, bubblewrap, the offline corpus and data.
A failure fails its job, so the tick opens no PR; the report goes to the job summary.

Areas and states. Each Check is `ok`, `fail` (the tick would fail or mislead: stop), `warn` (it will
work, with a consequence worth knowing), `manual` ("cannot check: do X by hand": GITHUB_TOKEN cannot
read the repository's Actions settings or its secrets; only a token of the owner's can, and doctor
uses one when it has it), or `skip`.

"May GitHub Actions open pull requests?" ("Allow GitHub Actions to create and approve pull requests")
is read from the Actions settings when the token can (an admin's); with GITHUB_TOKEN it is probed:
POST /pulls for a head branch that cannot exist. GitHub refuses it with 403 "GitHub Actions is not
permitted to create or approve pull requests." when the setting is off, and with 422 (validation)
when it is on; nothing is ever created. That GitHub checks the setting before validating the body is
an inference from its answers, not a documented rule; if it ever answered 422 first, the propose job
would still stop at its first PR with the same message and the fix.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
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
PROBE_HEAD = "autoresearch-ci-doctor/this-branch-does-not-exist"
NOT_PERMITTED = "not permitted to create or approve pull requests"
# Rule types that stop a plain push of the judge's ledger commit to main (non_fast_forward and
# required_linear_history do not: the judge only fast-forwards).
BLOCKING_RULES = {
    "update": "restricts updates",
    "pull_request": "requires a pull request",
    "required_status_checks": "requires status checks",
    "required_signatures": "requires signed commits",
    "required_deployments": "requires deployments",
}
REDEPLOY = "modal deploy -m autoresearch_ci.runners.modal_app"
APPARMOR = (
    "on Ubuntu 23.10+ (24.04) AppArmor restricts unprivileged user namespaces: "
    "`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (keep it with "
    "`echo kernel.apparmor_restrict_unprivileged_userns=0 | sudo tee /etc/sysctl.d/60-userns.conf`), "
    "or give /usr/bin/bwrap an AppArmor profile that allows `userns`"
)


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
# GitHub, through the forge's client (PyGithub's requester: retries, rate limits)


def _get(api, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    """(status, data) of one REST call under /repos/{slug}; failures are answers, not exceptions."""
    from github import GithubException

    url = f"/repos/{api.slug}" + (f"/{path}" if path else "")
    logging.getLogger("github").setLevel(logging.ERROR)  # a refused probe is an answer, not a warning
    try:
        _, data = api.gh.requester.requestJsonAndCheck(method, url, input=body)
        return 200, data
    except GithubException as e:
        return e.status, e.data
    except Exception as e:  # transport: reported as a failure of the check, never a crash of doctor
        return 0, {"message": f"{type(e).__name__}: {e}"}


def _message(data: object) -> str:
    return str(data.get("message", "")) if isinstance(data, dict) else str(data)


def _cannot(status: int, data: object, scope: str) -> str:
    if status == 403:
        return f"the token cannot read it (403 {_message(data)!r}; it needs `{scope}`)"
    return f"GitHub answered {status}: {_message(data)}"


def check_github(cfg: Config, ctx: Context) -> list[Check]:
    area = "github"
    api = ctx.github
    if api is None:
        return [
            Check(
                area,
                "GitHub access",
                MANUAL,
                "no GitHub token here, so nothing on GitHub was checked",
                "run `gh auth login` (or set GITHUB_TOKEN) and run doctor again",
            )
        ]
    slug, base = api.slug, cfg.github.base_branch
    out: list[Check] = []
    status, repo = _get(api, "GET", "")
    if status != 200:
        fix = "check github.repo in autoresearch.toml and the token (`gh auth status`)"
        return [Check(area, "repository", FAIL, f"{slug}: {status} {_message(repo)}", fix)]
    admin = bool((repo.get("permissions") or {}).get("admin")) if isinstance(repo, dict) else False
    out.append(Check(area, "repository", OK, f"{slug} is reachable"))

    status, branch = _get(api, "GET", f"branches/{base}")
    if status != 200:
        out.append(
            Check(
                area,
                "base branch",
                FAIL,
                f"no branch {base!r} ({status})",
                "set the repository variable AUTORESEARCH_BASE_BRANCH (or [github] base_branch) to "
                "the branch the research lives on",
            )
        )
        branch = {}
    else:
        out.append(Check(area, "base branch", OK, f"{base} exists"))

    out.append(_check_may_open_prs(api, base, admin))
    out.extend(_check_labels(api, cfg))
    out.append(_check_pages(api, ctx))
    rules = _rules(api, base)
    out.append(_check_ledger_push(api, base, branch if isinstance(branch, dict) else {}, rules))
    if cfg.github.merge_mode == "auto":
        out.append(_check_automerge(repo, branch if isinstance(branch, dict) else {}, rules))
    return out


def _check_may_open_prs(api, base: str, admin: bool) -> Check:
    name = "GitHub Actions may open pull requests"
    fix = (
        "Settings → Actions → General → Workflow permissions → tick “Allow GitHub Actions to create and "
        "approve pull requests” → Save (or `gh api -X PUT repos/OWNER/REPO/actions/permissions/workflow "
        "-F can_approve_pull_request_reviews=true -f default_workflow_permissions=read`)"
    )
    status, data = _get(api, "GET", "actions/permissions/workflow")
    if status == 200 and isinstance(data, dict):
        if data.get("can_approve_pull_request_reviews"):
            return Check(
                "github", name, OK, "the setting is on (read from the repository's Actions settings)"
            )
        return Check(
            "github", name, FAIL, "the setting is off: the propose job's first PR would be refused", fix
        )
    status, data = _get(
        api, "POST", "pulls", {"head": PROBE_HEAD, "base": base, "title": "autoresearch-ci probe"}
    )
    text = _message(data)
    if status == 403 and NOT_PERMITTED in text.lower():
        return Check("github", name, FAIL, f"GitHub says: {text}", fix)
    if status == 422:
        return Check(
            "github",
            name,
            OK,
            "GitHub validated a probe that opens nothing instead of refusing it, so the setting is on",
        )
    why = _cannot(status, data, "pull-requests: write") if status else text
    return Check("github", name, MANUAL, f"cannot check ({why})", "make sure of it by hand: " + fix)


def _check_labels(api, cfg: Config) -> list[Check]:
    out = []
    for label in cfg.github.labels:
        from urllib.parse import quote

        status, data = _get(api, "GET", f"labels/{quote(label, safe='')}")
        if status == 200:
            out.append(Check("github", f"label “{label}”", OK, "exists"))
        elif status == 404:
            out.append(
                Check(
                    "github",
                    f"label “{label}”",
                    WARN,
                    "missing: the first tick creates it (the propose job has `issues: write`)",
                    f"nothing to do; to create it now: `gh label create {label}`",
                )
            )
        else:
            out.append(Check("github", f"label “{label}”", MANUAL, _cannot(status, data, "issues: read")))
    return out


def _check_pages(api, ctx: Context) -> Check:
    name = "Pages (the dashboard)"
    fix = (
        "Settings → Pages → Build and deployment → Source: “GitHub Actions” (or `gh api -X POST "
        "repos/OWNER/REPO/pages -f build_type=workflow`); or set the variable AUTORESEARCH_PAGES to false"
    )
    if not ctx.pages:
        return Check("github", name, SKIP, "AUTORESEARCH_PAGES is false: no dashboard deploy")
    status, data = _get(api, "GET", "pages")
    if status == 200 and isinstance(data, dict):
        if data.get("build_type") == "workflow":
            return Check("github", name, OK, f"source: GitHub Actions ({data.get('html_url', '')})")
        return Check(
            "github",
            name,
            FAIL,
            f"source is {data.get('build_type')!r}, not GitHub Actions: the deploy fails",
            fix,
        )
    if status == 404:
        return Check("github", name, FAIL, "Pages is not enabled: the publish job's deploy would fail", fix)
    return Check("github", name, MANUAL, f"cannot check ({_cannot(status, data, 'pages: read')})", fix)


def _rules(api, base: str) -> list[dict]:
    status, data = _get(api, "GET", f"rules/branches/{base}")
    return list(data) if status == 200 and isinstance(data, list) else []


def _check_ledger_push(api, base: str, branch: dict, rules: list[dict]) -> Check:
    name = f"the judge can push the ledger to {base}"
    blocking: dict[int, list[str]] = {}
    for r in rules:
        if r.get("type") in BLOCKING_RULES:
            blocking.setdefault(int(r.get("ruleset_id") or 0), []).append(BLOCKING_RULES[r["type"]])
    stuck = []
    for rid, what in blocking.items():
        status, rs = _get(api, "GET", f"rulesets/{rid}")
        can = rs.get("current_user_can_bypass") if status == 200 and isinstance(rs, dict) else None
        label = rs.get("name", rid) if isinstance(rs, dict) else rid
        if can != "always":
            stuck.append(f"ruleset “{label}” ({', '.join(what)})")
    if stuck:
        return Check(
            "github",
            name,
            FAIL,
            f"{'; '.join(stuck)} would refuse the judge's push (“main is protected”)",
            "Settings → Rules → Rulesets → the ruleset → Bypass list → Add bypass → GitHub Actions (or "
            "drop the rule for the bot's ledger commits)",
        )
    if branch.get("protected"):
        return Check(
            "github",
            name,
            MANUAL,
            f"a branch protection rule protects {base}; GITHUB_TOKEN cannot read its settings",
            "Settings → Branches → the rule: if it requires pull requests or status checks, allow "
            "github-actions to bypass it (or the judge stops with “main is protected”)",
        )
    return Check("github", name, OK, "no ruleset or protection rule stops a direct push")


def _check_automerge(repo: dict, branch: dict, rules: list[dict]) -> Check:
    name = 'auto-merge (merge_mode = "auto")'
    if isinstance(repo, dict) and repo.get("allow_auto_merge") is False:
        return Check(
            "github",
            name,
            FAIL,
            "“Allow auto-merge” is off: enabling auto-merge on a keep would fail",
            "Settings → General → Pull Requests → tick “Allow auto-merge” "
            "(`gh repo edit --enable-auto-merge`)",
        )
    checks = set()
    for r in rules:
        if r.get("type") == "required_status_checks":
            for c in (r.get("parameters") or {}).get("required_status_checks") or []:
                checks.add(c.get("context"))
    prot = (branch.get("protection") or {}).get("required_status_checks") or {}
    checks |= set(prot.get("contexts") or [])
    others = sorted(c for c in checks if c and c != "autoresearch/eval")
    if others:
        return Check(
            "github",
            name,
            FAIL,
            f"required check(s) {', '.join(others)} never run on the bot's PRs (a PR opened with "
            "GITHUB_TOKEN starts no pull_request workflow by itself), so auto-merge would never fire",
            "require only the status `autoresearch/eval` on main",
        )
    if not checks:
        return Check(
            "github",
            name,
            WARN,
            "no required status check on main: GitHub refuses auto-merge (“clean status”) and the judge "
            "merges at once",
            "add a rule on main requiring the status check `autoresearch/eval`",
        )
    return Check("github", name, OK, "main requires autoresearch/eval, which the judge sets")


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
# Modal: the token, the deployed app, its harness


def check_modal(cfg: Config, lookup: Callable | None = None) -> list[Check]:
    """`lookup(app, name)` finds a deployed function (modal.Function.from_name); the checks hydrate it
    (the token and the deployment) and call `harness_info`, a CPU function, for the harness hash."""
    area = "modal"
    app = cfg.modal.app_name
    if lookup is None:
        try:
            import modal
        except ImportError:
            return [Check(area, "modal", FAIL, "the modal package is not installed", "pip install modal")]
        lookup = modal.Function.from_name
    from modal import exception as mx

    token_fix = (
        "create a token in the Modal dashboard (Settings → API Tokens → New token) and store it in the "
        "secrets MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (locally: `modal token new`)"
    )
    deploy_fix = f"deploy it from the repository root: `{REDEPLOY}` (with the Modal token of the workspace)"
    try:
        run_fn = lookup(app, "run_candidate")
        run_fn.hydrate()
    except mx.AuthError as e:
        return [Check(area, "Modal token", FAIL, f"Modal refused the token: {e}", token_fix)]
    except mx.NotFoundError as e:
        return [
            Check(area, "Modal token", OK, "accepted"),
            Check(area, f"app “{app}”", FAIL, f"not deployed: {e}", deploy_fix),
        ]
    except Exception as e:
        return [Check(area, "Modal", FAIL, f"{type(e).__name__}: {e}", token_fix)]
    out = [Check(area, "Modal token", OK, "accepted"), Check(area, f"app “{app}”", OK, "deployed")]
    try:
        info = json.loads(lookup(app, "harness_info").remote())
    except mx.NotFoundError:
        return [
            *out,
            Check(area, "deployed harness", FAIL, "the deployment predates harness_info", deploy_fix),
        ]
    except Exception as e:
        return [
            *out,
            Check(
                area, "deployed harness", FAIL, f"harness_info failed: {type(e).__name__}: {e}", deploy_fix
            ),
        ]
    from harness.integrity import harness_sha256

    mine, theirs = harness_sha256(), str(info.get("harness_sha256") or "")
    if theirs != mine:
        out.append(
            Check(
                area,
                "deployed harness",
                FAIL,
                f"the app runs harness {theirs[:12]}, this checkout has {mine[:12]}: "
                "every run would be refused",
                f"redeploy: `{REDEPLOY}`",
            )
        )
    else:
        out.append(Check(area, "deployed harness", OK, f"the same as this checkout's ({mine[:12]})"))
    if info.get("isolation") == "none":
        out.append(
            _unsandboxed(
                cfg, area, f"bubblewrap cannot start in Modal's container ({info.get('isolation_detail')})"
            )
        )
    return out


def _unsandboxed(cfg: Config, area: str, detail: str, fix: str = "") -> Check:
    consequence = "runs get `isolation: none`; " + (
        "merged anyway (allow_unisolated_merge)"
        if cfg.github.allow_unisolated_merge
        else "their keeps are not merged by themselves"
    )
    return Check(
        area,
        "sandbox (bubblewrap)",
        WARN if cfg.github.allow_unisolated_merge else FAIL,
        f"{detail}: {consequence}",
        fix,
    )


# ----------------------------------------------------------------------------------------------
# the self-hosted GPU machine


def bwrap_works() -> tuple[bool, str]:
    """Can bubblewrap start a namespace here? (the harness's own probe when it has one)."""
    try:
        from harness.sandbox import probe
    except ImportError:
        probe = None
    if probe is not None:
        mode, detail = probe()
        return mode == "bwrap", detail
    exe = shutil.which("bwrap")
    if exe is None:
        return False, "bubblewrap (bwrap) is not installed"
    argv = [
        exe,
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "true",
    ]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return False, str(e)
    return p.returncode == 0, (p.stderr.strip() or f"exit {p.returncode}") if p.returncode else "starts"


def check_self_hosted(cfg: Config) -> list[Check]:
    area = "self-hosted"
    from harness.presets import get_preset

    preset = get_preset(cfg.preset)
    out = []
    if preset.device == "cuda":
        try:
            import torch

            gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception as e:  # a broken torch install is a failed check, not a crash
            gpu, why = None, f"{type(e).__name__}: {e}"
        else:
            why = "torch sees no CUDA device"
        if gpu:
            out.append(Check(area, "GPU", OK, gpu))
        else:
            out.append(
                Check(
                    area,
                    "GPU",
                    FAIL,
                    f"{why} (preset {cfg.preset} trains on CUDA)",
                    "install the NVIDIA driver on this machine; the train job installs torch's CUDA "
                    "build itself (or set AUTORESEARCH_TORCH to the build that fits the driver)",
                )
            )
    else:
        out.append(Check(area, "GPU", SKIP, f"preset {cfg.preset} runs on {preset.device}"))
    ok, detail = bwrap_works()
    if ok:
        out.append(Check(area, "sandbox (bubblewrap)", OK, f"bwrap starts a namespace ({detail})"))
    else:
        out.append(_unsandboxed(cfg, area, detail, f"`sudo apt-get install -y bubblewrap`; {APPARMOR}"))
    from harness.corpus import MissingCorpusError, install_command, package_dir

    for corpus in preset.offline_corpus:
        try:
            package_dir(corpus)
        except MissingCorpusError:
            out.append(Check(area, f"corpus {corpus}", FAIL, "not installed", f"`{install_command(corpus)}`"))
    from harness.data import CacheError, load_prepared, prepare_command

    try:
        data = load_prepared(preset)
        out.append(Check(area, "data", OK, f"prepared: {data.describe()}"))
    except (CacheError, OSError, ValueError) as e:
        out.append(
            Check(
                area,
                "data",
                WARN,
                f"not prepared yet ({str(e).splitlines()[0][:200]}): the train job prepares it first",
                f"to do it now: `{prepare_command(preset)}`",
            )
        )
    return out


# ----------------------------------------------------------------------------------------------
# all of it


def run_checks(
    cfg: Config, ctx: Context, areas: tuple[str, ...] = AREAS, modal_lookup: Callable | None = None
) -> list[Check]:
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


def workflow_choices(api, runner: str | None, proposer: str | None) -> tuple[str, str]:
    """The runner and proposer a tick of the workflow will use: the flags when given, else the
    repository variables AUTORESEARCH_RUNNER / AUTORESEARCH_PROPOSER (readable with the owner's
    token), else the workflow's defaults (modal, anthropic)."""

    def variable(name: str) -> str | None:
        if api is None:
            return None
        status, data = _get(api, "GET", f"actions/variables/{name}")
        return str(data.get("value")) if status == 200 and isinstance(data, dict) else None

    runner = runner or variable("AUTORESEARCH_RUNNER") or "modal"
    proposer = proposer or variable("AUTORESEARCH_PROPOSER") or "anthropic"
    return runner, proposer


def secrets_from_env(names: list[str], env: Mapping[str, str] = os.environ) -> dict[str, bool | None]:
    """CI: the workflow passes `SECRET_SET_<NAME>: ${{ secrets.<NAME> != '' }}` (a boolean, never the
    value) for each secret a tick may need."""
    out: dict[str, bool | None] = {}
    for n in names:
        v = env.get(f"SECRET_SET_{n}")
        out[n] = None if v is None else v.strip().lower() == "true"
    return out


def secrets_from_github(api, names: list[str]) -> dict[str, bool | None]:
    """Locally, with the owner's token: the repository's secret names (GITHUB_TOKEN cannot list them)."""
    status, data = _get(api, "GET", "actions/secrets")
    if status != 200 or not isinstance(data, dict):
        return dict.fromkeys(names)
    have = {s.get("name") for s in data.get("secrets") or []}
    return {n: n in have for n in names}
