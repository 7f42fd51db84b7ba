"""The proposer interface: given what the loop knows, suggest one change to train.py.

`offline` is a seeded search over train.py's top-level constants that learns from the ledger;
`anthropic` asks Claude through the real SDK with tool use. A proposer never raises for a bad
reply: it returns Proposal(ok=False, error=...), which the loop records as a failed proposal.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, Field

from autoresearch_ci.records import ExperimentRecord, Proposal


class ProposalContext(BaseModel):
    program_md: str
    resources_md: str
    files: dict[str, str]  # the editable files at the parent commit: path -> text
    parent_commit: str
    recent: list[ExperimentRecord] = Field(default_factory=list)  # newest last
    siblings: list[Proposal] = Field(default_factory=list)  # already proposed this tick
    seed: int = 0


class Proposer(Protocol):
    name: str

    def propose(self, context: ProposalContext) -> Proposal:
        """One proposal; ok=False (with error) instead of raising."""
