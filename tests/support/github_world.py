"""A research repository on the fake GitHub, and the tick's steps run in process as their jobs: the
propose and judge jobs' own permissions (read from the workflow), git pushes as the job's token.
Training is a stand-in runner that answers each run with a val_bpb (or an infrastructure failure),
so what runs is settle, propose, train and judge: the product code.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from autoresearch_ci.config import load_config
from autoresearch_ci.forge.github import GitHubForge
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.records import RunMetrics, RunOutcome
from autoresearch_ci.steps.judge import judge
from autoresearch_ci.steps.propose import propose
from autoresearch_ci.steps.settle import TickIds, settle
from autoresearch_ci.steps.train import train
from support.actions import job_permissions, load
from support.fake_github import FakeGitHub
from support.tick_fixtures import ScriptedProposer

WORKFLOW = load()
TRAIN = "LR = 0.01  # test knob\nSTEPS = 10\n\ndef train(ctx):\n    pass\n"
SLUG = "o/r"


class Runner:
    """Answers each run: baselines 1.500 (+0.001 per seed); a candidate what `value` says for its
    train.py, or an infrastructure failure when `down` is set."""

    name = "local"

    def __init__(self):
        self.down = False
        self.isolation = None  # what metrics.json says of the sandbox ("bwrap", "none"; None: silent)
        self.seen = []

    def run_many(self, requests):
        self.seen.extend(requests)
        out = []
        for r in requests:
            if self.down and r.role != "baseline":
                out.append(RunOutcome(request=r, runner="local", infra_error="the GPU host was preempted"))
                continue
            v = 1.5 + 0.001 * (r.seed % 3) if r.role == "baseline" else (1.2 if "0.02" in r.train_py else 1.5)
            m = RunMetrics(
                status="ok", val_bpb=v, device="cpu", harness_sha256="h" * 64, isolation=self.isolation
            )
            out.append(RunOutcome(request=r, runner="local", metrics=m, wall_seconds=10.0))
        return out


class World:
    def __init__(self, tmp: Path, gh: FakeGitHub):
        self.tmp, self.gh, self.n = tmp, gh, 0
        self.runner = Runner()

    def clone(self) -> Path:
        self.n += 1
        dest = self.tmp / f"job{self.n}"
        subprocess.run(["git", "clone", "-q", f"file://{self.gh.git.dir}", str(dest)], check=True)
        return dest

    def forge(self, job: str, repo: Path) -> GitHubForge:
        token = self.gh.add_token(f"ghs_{job}_{self.n}", job_permissions(WORKFLOW, job))
        cfg = load_config(repo)
        forge = GitHubForge(
            SLUG,
            token,
            workdir=repo,
            api_url=self.gh.base_url,
            labels=list(cfg.github.labels),
            retries=1,
            backoff=0.01,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
        forge.git.env["GITHUB_TOKEN"] = token  # git pushes as the job (actions/checkout keeps the token)
        return forge

    def tick(self, run_id: str, script, *, settle_first=True, judge_it=True, down=False):
        """One tick: settle + propose (the propose job), train, judge (the judge job)."""
        repo = self.clone()
        cfg = load_config(repo)
        forge = self.forge("propose", repo)
        ledger = Ledger(repo / cfg.paths.ledger)
        stamp = f"2026112{run_id[-1]}-{run_id:0>6}"
        ids = TickIds(f"{stamp}-tick00", run_id, stamp)
        carried = settle(cfg, forge, ledger, ids).carried if settle_first else []
        state = propose(cfg, forge, ScriptedProposer(*script), ledger, "local", ids=ids, carried=carried)
        self.runner.down = down
        results = train(cfg, state, self.runner, ledger)
        if not judge_it:
            return state, []
        repo = self.clone()
        jforge = self.forge("judge", repo)
        return state, judge(cfg, state, results, jforge, Ledger(repo / cfg.paths.ledger))

    def ledger(self):
        text = self.gh.git.show_file("main", "ledger/experiments.jsonl")
        path = self.tmp / f"ledger{self.n}.jsonl"
        path.write_text(text)
        return {r.id: r for r in Ledger(path).records()}


def make_world(tmp_path: Path, toml: str = 'preset = "tiny"\n'):
    """The fixture's body: yields a World (use as `yield from make_world(...)`)."""
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "train.py").write_text(TRAIN)
    (seed / "program.md").write_text("improve it\n")
    (seed / "resources.md").write_text("# Resources\n")
    (seed / "autoresearch.toml").write_text(toml)
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", "-C", str(seed), *cmd], check=True, capture_output=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(tmp_path / "origin.git")], check=True)
    with FakeGitHub(tmp_path / "origin.git", slug=SLUG, token=None, enforce_git=True, labels=()) as gh:
        yield World(tmp_path, gh)
