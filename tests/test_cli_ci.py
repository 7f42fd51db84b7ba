"""The CLI as the workflow calls it: what each flag must reach."""

from __future__ import annotations

import time
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

from autoresearch_ci import cli
from autoresearch_ci.records import RunMetrics, RunOutcome, RunRequest
from autoresearch_ci.runners.deadline import NOT_STARTED, Within, within

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "autoresearch.toml").write_text('preset = "tiny"\n')
    return tmp_path


def test_budget_check_prices_the_runner_that_trains(repo, tmp_path, monkeypatch):
    """Before, budget-check took no --runner and a Modal tick's GPU time was priced at $0."""
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert (
        cli.main(["budget-check", "--repo", str(repo), "--runner", "modal", "--planned-candidates", "1"]) == 0
    )
    modal_table = summary.read_text()
    summary.write_text("")
    assert (
        cli.main(
            ["budget-check", "--repo", str(repo), "--runner", "self-hosted", "--planned-candidates", "1"]
        )
        == 0
    )
    local_table = summary.read_text()

    def planned_dollars(text: str) -> float:
        row = next(line for line in text.splitlines() if line.startswith("| dollars today"))
        return float(row.split("|")[3].strip().lstrip("$"))

    llm_only = planned_dollars(local_table)
    assert planned_dollars(modal_table) > llm_only + 0.3  # 3 runs x 388 s x $3.95/h ≈ $1.28 more


def test_the_base_branch_flag_reaches_the_forge(repo, monkeypatch):
    from autoresearch_ci.backends import make_forge

    args = cli.build_parser().parse_args(["judge", "--repo", str(repo), "--base-branch", "research"])
    cfg, _ = cli._config(args)
    assert cfg.github.base_branch == "research"
    monkeypatch.setenv("GITHUB_TOKEN", "t")
    monkeypatch.setenv("GITHUB_REPOSITORY", "o/r")
    assert make_forge(cfg, repo, "github").base_branch == "research"
    assert make_forge(cfg, repo, "local").base_branch == "research"


class Slow:
    name = "local"

    def __init__(self):
        self.got = []

    def run_many(self, requests):
        self.got.extend(requests)
        return [
            RunOutcome(request=r, runner="local", metrics=RunMetrics(status="ok", val_bpb=1.0))
            for r in requests
        ]


def req(seed: int) -> RunRequest:
    return RunRequest(
        experiment_id=f"e{seed}", role="candidate", commit="0" * 40, train_py="", preset="tiny", seed=seed
    )


def test_a_runner_without_its_own_deadline_starts_only_what_can_finish():
    """A run is budgeted at its worst case (the harness's hard deadline plus a margin): with room for
    two and a half of them, two runs start one at a time, and all three with two lanes."""
    from autoresearch_ci.runners.deadline import RUN_MARGIN_S
    from harness.protocol import hard_deadline_seconds

    room = 2.5 * (hard_deadline_seconds("tiny") + RUN_MARGIN_S)
    inner = Slow()
    out = Within(inner, time.monotonic() + room).run_many([req(0), req(1), req(2)])
    assert [r.seed for r in inner.got] == [0, 1]
    assert [o.metrics is not None for o in out] == [True, True, False]
    assert out[2].infra_error == NOT_STARTED and out[2].request.seed == 2 and out[2].attempts == 0
    assert Within(Slow(), time.monotonic() + room, parallel=2).run_many([req(0), req(1), req(2)])[2].metrics


def test_a_runner_with_its_own_deadline_is_handed_it():
    from autoresearch_ci.runners.modal import ModalRunner

    r = ModalRunner()
    d = time.monotonic() + 60
    assert within(r, d) is r and r.deadline == d
    inner = Slow()
    assert within(inner, None) is inner


def test_the_dependency_floors_are_the_versions_the_code_is_tested_against():
    """anthropic>=0.40 and modal>=1.0 admitted clients without what the code calls."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {d.split(">=")[0].lower(): Version(d.split(">=")[1]) for d in deps if ">=" in d}
    assert floors["anthropic"] >= Version("2.10") and floors["modal"] >= Version("1.6")
    assert floors["pygithub"] >= Version("2.10")
    for dist in ("anthropic", "modal", "pygithub"):
        assert Version(version(dist)) >= floors[dist], dist


def test_prepare_data_warms_the_bytecode_where_the_runners_harness_reads_it(
    repo, tmp_path, prepared_tiny, monkeypatch, capsys
):
    """The self-hosted job's set-up step pays the once-per-install warm-up, into the very directory the
    local runner's harness processes are given, so the job's first run does not."""
    from autoresearch_ci.runners.process import harness_env
    from harness import bytecode

    monkeypatch.setenv("AUTORESEARCH_STATE", str(tmp_path / "state"))
    calls: list[tuple[str, str]] = []
    real = bytecode.ensure_warm

    def small_warm(prefix, device, log=print, modules=bytecode.MODULES):
        calls.append((prefix, device))
        return real(prefix, device, log=log, modules=("colorsys",))

    monkeypatch.setattr(bytecode, "ensure_warm", small_warm)
    assert cli.main(["prepare-data", "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    assert calls == [(harness_env(REPO)["PYTHONPYCACHEPREFIX"], "cpu")]
    assert list((tmp_path / "state" / "pycache").glob("*/.warm-cpu-*"))
    # "[harness]" reaches the log as written, not eaten as rich markup.
    assert "[harness] compiling the bytecode" in out and "compiled the bytecode" in out
    assert cli.main(["prepare-data", "--repo", str(repo)]) == 0
    assert "once per install" not in capsys.readouterr().out
