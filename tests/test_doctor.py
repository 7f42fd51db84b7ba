"""`autoresearch-ci doctor`: every check against a fork's state, what it reports, what it says to do.

GitHub is the fake (enforcing token permissions: the preflight job's GITHUB_TOKEN, or an owner's
admin token); Modal is a stand-in for `modal.Function.from_name` that raises what Modal raises.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from modal import exception as mx
from support.actions import job_permissions, load
from support.fake_github import FakeGitHub
from support.gitrepo import init_bare_remote, init_repo

from autoresearch_ci import doctor, doctor_github, doctor_machines
from autoresearch_ci.config import load_config
from autoresearch_ci.forge.github_api import GitHubAPI

REPO = Path(__file__).resolve().parents[1]
PREFLIGHT = job_permissions(load(), "preflight")


@pytest.fixture
def gh(tmp_path):
    work = init_repo(tmp_path / "work")
    init_bare_remote(work, tmp_path / "origin.git")
    with FakeGitHub(tmp_path / "origin.git", slug="o/r", token=None, labels=()) as fake:
        fake.add_token("preflight", PREFLIGHT)
        fake.add_token("owner", {}, admin=True, actions=False)
        yield fake


def api(gh: FakeGitHub, token: str = "preflight") -> GitHubAPI:
    return GitHubAPI("o/r", token, gh.base_url, timeout=10, retries=0, backoff=0.01, max_rate_limit_wait=1,
                     seconds_between_requests=None, seconds_between_writes=None)  # fmt: skip


def checks(gh, tmp_path, toml: str = "", token: str = "preflight", **ctx) -> dict[str, doctor.Check]:
    (tmp_path / "autoresearch.toml").write_text(toml)
    cfg = load_config(tmp_path)
    c = doctor.Context(runner=ctx.pop("runner", "modal"), proposer="anthropic", github=api(gh, token), **ctx)
    return {x.name: x for x in doctor_github.check_github(cfg, c)}


def test_a_ready_fork(gh, tmp_path):
    gh.labels["autoresearch"] = {"color": "ededed", "description": ""}
    got = checks(gh, tmp_path)
    assert {k: v.state for k, v in got.items()} == {
        "repository": "ok",
        "base branch": "ok",
        "GitHub Actions may open pull requests": "ok",
        "label “autoresearch”": "ok",
        "Pages (the dashboard)": "ok",
        "the judge can push the ledger to main": "ok",
    }
    assert "probe" in got["GitHub Actions may open pull requests"].detail
    assert gh.pulls == {}  # the probe opened nothing


def test_what_a_fresh_forks_problems_look_like(gh, tmp_path):
    gh.actions_settings["can_approve_pull_request_reviews"] = False
    gh.pages = None
    gh.add_ruleset(["pull_request"], name="protect main")
    got = checks(gh, tmp_path, toml='[github]\nbase_branch = "research"\n')
    assert got["base branch"].state == "fail" and "AUTORESEARCH_BASE_BRANCH" in got["base branch"].fix
    may = got["GitHub Actions may open pull requests"]
    assert may.state == "fail" and "GitHub Actions is not permitted" in may.detail
    assert "Allow GitHub Actions to create and approve pull requests" in may.fix
    label = got["label “autoresearch”"]
    assert label.state == "warn" and "gh label create autoresearch" in label.fix
    pages = got["Pages (the dashboard)"]
    assert (
        pages.state == "fail"
        and "Source: “GitHub Actions”" in pages.fix
        and "build_type=workflow" in pages.fix
    )
    push = got["the judge can push the ledger to research"]
    assert push.state == "ok"  # the ruleset guards the default branch only
    got = checks(gh, tmp_path)
    push = got["the judge can push the ledger to main"]
    assert push.state == "fail" and "protect main" in push.detail and "Bypass list" in push.fix


def test_a_ruleset_github_actions_may_bypass_does_not_block(gh, tmp_path):
    gh.add_ruleset(["pull_request", "non_fast_forward"], bypass_actions=True)
    assert checks(gh, tmp_path)["the judge can push the ledger to main"].state == "ok"


def test_branch_protection_cannot_be_read_with_github_token_so_it_is_left_to_a_person(gh, tmp_path):
    gh.protection["main"] = {"required_status_checks": []}
    c = checks(gh, tmp_path)["the judge can push the ledger to main"]
    assert c.state == "manual" and "github-actions" in c.fix


def test_what_github_token_cannot_read_is_never_reported_ok(gh, tmp_path):
    gh.add_token("weak", {"contents": "read"})  # no pull-requests write for the probe, no pages read
    got = checks(gh, tmp_path, token="weak")
    assert got["GitHub Actions may open pull requests"].state == "manual"
    assert got["GitHub Actions may open pull requests"].fix.startswith("make sure of it by hand")
    assert got["Pages (the dashboard)"].state == "manual"
    assert got["label “autoresearch”"].state == "manual"


def test_an_owners_token_reads_the_actions_settings_instead_of_probing(gh, tmp_path):
    gh.actions_settings["can_approve_pull_request_reviews"] = False
    c = checks(gh, tmp_path, token="owner")["GitHub Actions may open pull requests"]
    assert c.state == "fail" and "Actions settings" not in c.detail and gh.count("POST", r"/pulls$") == 0
    gh.actions_settings["can_approve_pull_request_reviews"] = True
    c = checks(gh, tmp_path, token="owner")["GitHub Actions may open pull requests"]
    assert c.state == "ok" and "read from the repository's Actions settings" in c.detail


def test_auto_merge_requirements(gh, tmp_path):
    auto = '[github]\nmerge_mode = "auto"\n'
    name = 'auto-merge (merge_mode = "auto")'
    assert checks(gh, tmp_path, toml=auto)[name].state == "warn"  # nothing pending: it merges at once
    gh.protection["main"] = {"required_status_checks": ["autoresearch/eval", "ci / test"]}
    c = checks(gh, tmp_path, toml=auto)[name]
    assert c.state == "fail" and "ci / test" in c.detail and "never run" in c.detail
    gh.protection["main"] = {"required_status_checks": ["autoresearch/eval"]}
    assert checks(gh, tmp_path, toml=auto)[name].state == "ok"


def test_secrets_are_checked_as_booleans():
    env = {"SECRET_SET_ANTHROPIC_API_KEY": "true", "SECRET_SET_MODAL_TOKEN_ID": "false"}
    names = doctor.needed_secrets("modal", "anthropic")
    got = doctor.secrets_from_env(names, env)
    assert got == {"ANTHROPIC_API_KEY": True, "MODAL_TOKEN_ID": False, "MODAL_TOKEN_SECRET": None}
    out = {c.name: c for c in doctor.check_secrets(doctor.Context("modal", "anthropic", secrets=got))}
    assert out["ANTHROPIC_API_KEY"].state == "ok"
    assert (
        out["MODAL_TOKEN_ID"].state == "fail" and "gh secret set MODAL_TOKEN_ID" in out["MODAL_TOKEN_ID"].fix
    )
    assert out["MODAL_TOKEN_SECRET"].state == "manual" and "gh secret list" in out["MODAL_TOKEN_SECRET"].fix
    assert doctor.needed_secrets("self-hosted", "offline") == []


def test_an_owners_token_lists_the_secrets(gh):
    gh.secrets = {"ANTHROPIC_API_KEY"}
    names = ["ANTHROPIC_API_KEY", "MODAL_TOKEN_ID"]
    assert doctor_github.secrets_from_github(api(gh, "owner"), names) == {
        "ANTHROPIC_API_KEY": True,
        "MODAL_TOKEN_ID": False,
    }
    assert doctor_github.secrets_from_github(api(gh), names) == {
        "ANTHROPIC_API_KEY": None,
        "MODAL_TOKEN_ID": None,
    }


# -- Modal ------------------------------------------------------------------------------------------


class Fn:
    def __init__(self, app, name, world):
        self.app, self.name, self.w = app, name, world

    def hydrate(self):
        if self.w.get("auth"):
            raise mx.AuthError("Token missing")
        if self.name not in self.w["deployed"]:
            raise mx.NotFoundError(f"Lookup failed for Function '{self.name}'")
        return self

    def remote(self):
        self.hydrate()
        self.w["calls"].append(self.name)
        return json.dumps(self.w["info"])


def modal_checks(tmp_path, **world):
    from harness.integrity import harness_sha256

    w = {
        "deployed": {"run_candidate", "harness_info"},
        "calls": [],
        "info": {"harness_sha256": harness_sha256()},
    }
    w.update(world)
    (tmp_path / "autoresearch.toml").write_text("")
    out = doctor_machines.check_modal(load_config(tmp_path), lambda app, name: Fn(app, name, w))
    return {c.name: c for c in out}, w


def test_modal_ready_and_no_gpu_asked(tmp_path):
    got, w = modal_checks(tmp_path)
    assert {k: v.state for k, v in got.items()} == {
        "Modal token": "ok",
        "app “autoresearch-ci”": "ok",
        "deployed harness": "ok",
    }
    assert w["calls"] == ["harness_info"]  # a CPU function; run_candidate is only looked up


def test_modal_problems_say_what_to_run(tmp_path):
    got, _ = modal_checks(tmp_path, auth=True)
    assert got["Modal token"].state == "fail" and "API Tokens" in got["Modal token"].fix
    got, _ = modal_checks(tmp_path, deployed=set())
    app = got["app “autoresearch-ci”"]
    assert app.state == "fail" and "modal deploy -m autoresearch_ci.runners.modal_app" in app.fix
    got, _ = modal_checks(tmp_path, info={"harness_sha256": "f" * 64})
    assert got["deployed harness"].state == "fail" and "redeploy" in got["deployed harness"].fix
    got, _ = modal_checks(
        tmp_path, info={"harness_sha256": doctor_hash(), "isolation": "none", "isolation_detail": "x"}
    )
    assert got["sandbox (bubblewrap)"].state == "fail" and "not merged" in got["sandbox (bubblewrap)"].detail
    assert "AUTORESEARCH_MODAL_SHARED_STATE=0" in got["sandbox (bubblewrap)"].fix


def doctor_hash() -> str:
    from harness.integrity import harness_sha256

    return harness_sha256()


# -- the self-hosted machine -----------------------------------------------------------------------


def test_the_gpu_machine(tmp_path, monkeypatch, prepared_tiny):
    (tmp_path / "autoresearch.toml").write_text('preset = "tiny"\n')
    cfg = load_config(tmp_path)
    monkeypatch.setattr(doctor_machines, "bwrap_works", lambda: (True, "0.11"))
    got = {c.name: c for c in doctor_machines.check_self_hosted(cfg)}
    assert (
        got["GPU"].state == "skip" and got["sandbox (bubblewrap)"].state == "ok" and got["data"].state == "ok"
    )
    monkeypatch.setattr(
        doctor_machines, "bwrap_works", lambda: (False, "bwrap: setting up uid map: Permission denied")
    )
    got = {c.name: c for c in doctor_machines.check_self_hosted(cfg)}
    box = got["sandbox (bubblewrap)"]
    assert box.state == "fail" and "apt-get install -y bubblewrap" in box.fix
    assert "kernel.apparmor_restrict_unprivileged_userns=0" in box.fix
    (tmp_path / "autoresearch.toml").write_text('preset = "gpu"\n[github]\nallow_unisolated_merge = true\n')
    got = {c.name: c for c in doctor_machines.check_self_hosted(load_config(tmp_path))}
    assert got["sandbox (bubblewrap)"].state == "warn"  # allowed: merged anyway, said so
    assert got["GPU"].state in ("ok", "fail")  # this machine may or may not have one
    if got["GPU"].state == "fail":
        assert "NVIDIA driver" in got["GPU"].fix


def test_bwrap_probe_here_starts_or_says_why():
    ok, detail = doctor_machines.bwrap_works()
    assert isinstance(ok, bool) and detail


# -- the command ------------------------------------------------------------------------------------


def test_the_command_writes_the_report_to_the_job_summary_and_fails_the_job(gh, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "autoresearch.toml").write_text('[github]\nrepo = "o/r"\n')
    summary, output = tmp_path / "summary.md", tmp_path / "output"
    env = {
        "GITHUB_TOKEN": "preflight",
        "GITHUB_API_URL": gh.base_url,
        "GITHUB_STEP_SUMMARY": str(summary),
        "GITHUB_OUTPUT": str(output),
        "SECRET_SET_ANTHROPIC_API_KEY": "true",
        "SECRET_SET_MODAL_TOKEN_ID": "false",
        "SECRET_SET_MODAL_TOKEN_SECRET": "true",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from autoresearch_ci import cli

    args = ["--ci", "--only", "config,secrets,github", "--runner", "modal", "--proposer", "anthropic"]
    rc = cli.main(["doctor", "--repo", str(repo), *args])
    assert rc == 1
    text = summary.read_text()
    assert text.startswith("### autoresearch-ci doctor: 1 problem(s), the tick stops here")
    assert "| secrets | MODAL_TOKEN_ID | ❌ fail |" in text and "| github | repository | ✅ ok |" in text
    assert "ok=false" in output.read_text() and "runner=modal" in output.read_text()


def test_the_readme_steps_match_what_doctor_checks():
    """Every failure doctor can report is one of the README's "Run it on your fork" steps."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Run it on your fork") : readme.index("## Measured")]
    must = [
        "autoresearch-ci doctor",
        "ANTHROPIC_API_KEY",
        "MODAL_TOKEN_ID",
        "MODAL_TOKEN_SECRET",
        "Allow GitHub Actions to create and approve pull requests",
        "Source: “GitHub Actions”",
        "Bypass list",
        "autoresearch/eval",
        "Allow auto-merge",
        "modal deploy -m autoresearch_ci.runners.modal_app",
        "kernel.apparmor_restrict_unprivileged_userns=0",
        "bubblewrap",
        "AUTORESEARCH_BASE_BRANCH",
        "gh label create",
    ]
    missing = [m for m in must if m not in section]
    assert missing == [], missing
    src = (REPO / "autoresearch_ci" / "doctor_github.py").read_text(encoding="utf-8")
    for m in must[4:8]:  # the same words in doctor's fixes
        assert m in src, m
    assert not re.search(r"Read and write permissions", section), "the README must not ask for write defaults"


def test_on_your_machine_it_checks_for_what_the_workflow_will_use(gh):
    # no token: the workflow's defaults
    assert doctor_github.workflow_choices(None, None, None) == ("modal", "anthropic")
    gh.variables = {"AUTORESEARCH_RUNNER": "self-hosted", "AUTORESEARCH_PROPOSER": "offline"}
    assert doctor_github.workflow_choices(api(gh, "owner"), None, None) == ("self-hosted", "offline")
    assert doctor_github.workflow_choices(api(gh), None, None) == (
        "modal",
        "anthropic",
    )  # GITHUB_TOKEN cannot read them
    assert doctor_github.workflow_choices(api(gh, "owner"), "modal", None) == ("modal", "offline")
