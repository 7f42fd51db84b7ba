"""The locked harness: data, clock, evaluation and the run protocol that make `val_bpb` trustworthy.

    python -m harness prepare --preset cpu                     build the data cache once
    python -m harness run train.py --preset cpu --out m.json   train and score a train.py

`train.py` may import the exceptions below (`from harness import TrainingDiverged`) and nothing else
from this package; everything it needs arrives through the `ctx` its `train(ctx)` is given.
Importing this package is cheap (no torch): the supervisor, which never runs candidate code, uses it.
"""

from __future__ import annotations


class TrainingDiverged(RuntimeError):
    """The training loss went non-finite or blew up. Raised by ctx.log(); train.py may raise it too.
    The run's status is then "nan", which is the candidate's result, not a harness failure."""


class HarnessError(RuntimeError):
    """Something inside the harness failed: an infrastructure error (exit code 3), never charged to
    the candidate."""


__all__ = ["TrainingDiverged", "HarnessError"]
