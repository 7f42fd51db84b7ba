"""Helpers for the whole-tick tests: research repositories made by `autoresearch-ci init`, stand-ins
for a proposer and a runner, and a way to run one CLI step in its own process as a CI job would.

The stand-ins implement the same Proposer / Runner protocols as the real ones; they only decide what
comes back, so every other part of a tick (the forge, the guard, the judge, the ledger, resources.md)
is the product code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from autoresearch_ci import cli
from autoresearch_ci.forge.git import Git
from autoresearch_ci.ledger import Ledger
from autoresearch_ci.proposers.base import ProposalContext
from autoresearch_ci.records import ExperimentRecord, Proposal, RunOutcome, RunRequest

# Variables a CI job sets; a step gets only the ones its job would carry, never the test runner's own.
CI_PREFIXES = ("GITHUB_", "ANTHROPIC_", "MODAL_")

# A deliberately weak train.py, for a keep that no load on the machine can turn into a discard: the
# model learns (almost) nothing, because every learning rate is scaled to ~0, and its predictions are
# skewed by a fixed bonus on the logit of token 0. Its val_bpb is the same on every seed and does not
# depend on how many steps a busy machine manages, so the baseline's spread is nil; removing the
# bonus is a win of ~0.5 val_bpb even with no training at all, and a different tiny scale changes
# nothing. For the same reason it stops after one optimizer step (STOP_AFTER_STEPS): more steps would
# change no verdict, only cost each run the rest of its budget.
WEAK = {"LR_SCALE": "1e-6", "LOGIT_PENALTY": "10.0", "STOP_AFTER_STEPS": "1"}
FIXED = {"LR_SCALE": "1.0", "LOGIT_PENALTY": "0.0"}
_ANCHOR = "FINAL_LR_FRAC = 0.0\n"
_LRM = "        lrm = lr_multiplier(progress)\n"
_CAP = "        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)\n"
_BONUS = "        logits = torch.cat([logits[..., :1] + LOGIT_PENALTY, logits[..., 1:]], dim=-1)\n"
_STEP = "        step += 1\n"
_STOP = "        if step == STOP_AFTER_STEPS:\n            break\n"


def weak_train_py(train_py: str) -> str:
    """The template's train.py with the WEAK knobs added (see above)."""
    for anchor in (_ANCHOR, _LRM, _CAP, _STEP):
        if train_py.count(anchor) != 1:
            raise AssertionError(
                f"train.py changed shape ({anchor.strip()!r}): update tests/support/tick_fixtures.py"
            )
    knobs = "".join(f"{k} = {v}  # test knob\n" for k, v in WEAK.items())
    out = train_py.replace(_ANCHOR, _ANCHOR + knobs)
    out = out.replace(_LRM, _LRM.rstrip("\n") + " * LR_SCALE\n")
    out = out.replace(_STEP, _STEP + _STOP)
    return out.replace(_CAP, _CAP + _BONUS)


def set_knobs(train_py: str, **values: str) -> str:
    """train.py with the test knobs set to `values` (every other byte unchanged)."""
    out = []
    for line in train_py.splitlines(keepends=True):
        name = line.split(" = ", 1)[0]
        out.append(
            f"{name} = {values[name]}  # test knob\n" if name in values and "# test knob" in line else line
        )
    return "".join(out)


def init_research_repo(dest: Path, preset: str = "tiny") -> Git:
    """`autoresearch-ci init DEST --preset PRESET`, in process; a git work tree on main."""
    assert cli.main(["init", str(dest), "--preset", preset]) == 0
    return Git(dest)


def commit_all(repo: Git, message: str) -> str:
    repo.run("add", "-A")
    repo.run("commit", "-q", "-m", message)
    return repo.rev_parse("HEAD")


def refs(repo: Git) -> dict[str, str]:
    """Every ref of a repository and what it points at (branches, archive refs, notes)."""
    out = repo.run("for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def ledger_at(repo: Git, rev: str, path: str = "ledger/experiments.jsonl") -> list[ExperimentRecord]:
    """The ledger as committed at `rev` (what a fresh checkout would read)."""
    text = repo.show_file(rev, path)
    return [ExperimentRecord.model_validate_json(line) for line in text.splitlines() if line.strip()]


def read_ledger(root: Path) -> list[ExperimentRecord]:
    return Ledger(root / "ledger" / "experiments.jsonl").records()


# ----------------------------------------------------------------------------------------------
# stand-ins


class ScriptedProposer:
    """A proposer that answers each call with the next scripted function of the context."""

    def __init__(self, *script: Callable[[ProposalContext], Proposal], name: str = "scripted"):
        self.name = name
        self.script = list(script)
        self.contexts: list[ProposalContext] = []

    def propose(self, context: ProposalContext) -> Proposal:
        self.contexts.append(context)
        return self.script[len(self.contexts) - 1](context)


def edit(hypothesis: str, change: Callable[[str], str], **extra_files: str) -> Callable:
    """A script step: train.py transformed by `change`, plus any other files given."""

    def step(ctx: ProposalContext) -> Proposal:
        files = {"train.py": change(ctx.files["train.py"]), **extra_files}
        return Proposal(
            proposer="scripted", hypothesis=hypothesis, files=files, parent_commit=ctx.parent_commit
        )

    return step


def failure(error: str) -> Callable:
    """A script step: a failed proposal (as a refusal or a malformed reply ends), with its error."""

    def step(ctx: ProposalContext) -> Proposal:
        return Proposal(ok=False, proposer="scripted", parent_commit=ctx.parent_commit, error=error)

    return step


class InfraFailingRunner:
    """A runner whose machine fails for every candidate run (as a preempted GPU would), and hands
    anything else to `inner`. Named like the runner the tick was planned for."""

    def __init__(self, inner, name: str = "local", reason: str = "the GPU host was preempted (3 attempts)"):
        self.inner = inner
        self.name = name
        self.reason = reason
        self.seen: list[RunRequest] = []

    def run_many(self, requests: list[RunRequest]) -> list[RunOutcome]:
        self.seen.extend(requests)
        out = []
        for r in requests:
            if r.role == "baseline":
                out.extend(self.inner.run_many([r]))
            else:
                out.append(RunOutcome(request=r, runner=self.name, infra_error=self.reason, attempts=3))
        return out


# ----------------------------------------------------------------------------------------------
# CI steps in their own processes


def ci_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any CI variable or secret, plus what the job carries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CI_PREFIXES)}
    env.update(extra)
    return env


def run_step(args: list[str], env: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`autoresearch-ci ARGS` in a child process; fails the test with its output when it exits non-zero."""
    proc = subprocess.run(
        [sys.executable, "-m", "autoresearch_ci.cli", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"autoresearch-ci {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def outputs(path: Path) -> dict[str, str]:
    """The key=value lines a step wrote to $GITHUB_OUTPUT (the last value of each key)."""
    if not path.exists():
        return {}
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
