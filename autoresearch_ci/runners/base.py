"""The runner interface: run the locked harness on a candidate and bring its metrics back.

`local` runs `python -m harness run` in a subprocess on this machine (also what a self-hosted GPU
runner job uses); `modal` runs the same harness inside a Modal function with a GPU. A failure of
the infrastructure (preemption, a Modal error, a harness exit code of 3) is retried and reported
as `infra_error`; it is never charged to the candidate. The candidate's own crash, OOM, NaN or
timeout is a normal result with that status.
"""

from __future__ import annotations

from typing import Protocol

from autoresearch_ci.records import RunOutcome, RunRequest

# Exit codes of `python -m harness run` (see harness/__main__.py).
EXIT_RESULT = 0  # a result was produced, whatever its status: the candidate's own outcome
EXIT_USAGE = 2  # bad arguments (unknown preset, missing file)
EXIT_INFRA = 3  # the harness or the machine failed: retry, do not charge the candidate


class Runner(Protocol):
    name: str

    def run_many(self, requests: list[RunRequest]) -> list[RunOutcome]:
        """Run every request (in parallel where the backend can) and return one outcome each,
        in the same order. Never raises for a candidate's failure or an exhausted retry budget."""
