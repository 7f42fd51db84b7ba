"""The three steps of a tick in the call shape the whole-tick tests are written in.

The steps (autoresearch_ci/steps/) no longer take the research repository's path: the forge gives
them a checkout and takes files back. These tests still pass the path (`forge_repo=root` to propose,
`root` to judge); here it is checked to be the forge's own checkout, and dropped.
"""

from __future__ import annotations

from pathlib import Path

from autoresearch_ci.steps.judge import judge as _judge
from autoresearch_ci.steps.propose import propose as _propose
from autoresearch_ci.steps.state import TickResults, TickState
from autoresearch_ci.steps.train import train

__all__ = ["TickResults", "TickState", "judge", "propose", "train"]


def _same_checkout(forge, repo: Path | str | None) -> None:
    if repo is not None:
        assert Path(forge.git.dir).resolve() == Path(repo).resolve(), (forge.git.dir, repo)


def propose(cfg, forge, proposer, ledger, runner_name, *args, forge_repo=None, **kwargs) -> TickState:
    _same_checkout(forge, forge_repo)
    return _propose(cfg, forge, proposer, ledger, runner_name, *args, **kwargs)


def judge(cfg, state, results, forge, ledger, repo_root=None, **kwargs):
    _same_checkout(forge, repo_root)
    return _judge(cfg, state, results, forge, ledger, **kwargs)
