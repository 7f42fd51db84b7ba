"""doctor's GitHub checks: what the repository must allow before a tick can run (the label, Pages,
the judge's ledger push to main, auto-merge's requirements, whether GitHub Actions may open PRs),
and the repository's variables and secret names that say what a tick will use. Apart from
doctor.py because it is the one part that talks to GitHub, all through `_get`: one REST call under
/repos/{slug} with the forge's client, its failures answers rather than exceptions.

"May GitHub Actions open pull requests?" ("Allow GitHub Actions to create and approve pull requests")
is read from the Actions settings when the token can (an admin's); with GITHUB_TOKEN it is probed:
POST /pulls for a head branch that cannot exist. GitHub refuses it with 403 "GitHub Actions is not
permitted to create or approve pull requests." when the setting is off, and with 422 (validation)
when it is on; nothing is ever created. That GitHub checks the setting before validating the body is
an inference from its answers, not a documented rule; if it ever answered 422 first, the propose job
would still stop at its first PR with the same message and the fix.
"""

from __future__ import annotations

import logging

from autoresearch_ci.config import Config
from autoresearch_ci.doctor import FAIL, MANUAL, OK, SKIP, WARN, Check, Context

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


def secrets_from_github(api, names: list[str]) -> dict[str, bool | None]:
    """Locally, with the owner's token: the repository's secret names (GITHUB_TOKEN cannot list them)."""
    status, data = _get(api, "GET", "actions/secrets")
    if status != 200 or not isinstance(data, dict):
        return dict.fromkeys(names)
    have = {s.get("name") for s in data.get("secrets") or []}
    return {n: n in have for n in names}
