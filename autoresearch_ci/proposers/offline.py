"""The offline proposer: a seeded search over train.py's top-level numeric constants.

No LLM, no network. Each proposal moves exactly one module-level constant (`MATRIX_LR = 0.02`,
`DEPTH = 4`, `TOTAL_BATCH_SIZE = 2**19`) by one step of a small ladder, rewriting only that literal in
the source so every other byte of train.py stays as it was (constants.py finds, moves and writes
them). The search learns from the ledger:

- an edit already tried from the same value (same name, old, new) is never proposed again, nor one a
  sibling of this tick already proposed;
- after a kept move, the same constant keeps going the same way with about the same step;
- after a discarded or crashed move, the opposite direction or a smaller step is tried;
- constants never tried come first-ish; wide steps come only once the near ones are used up.

Ties are broken by a random draw seeded from the proposer's seed and a digest of the context, so the
same seed and the same ledger always give the same proposal.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from autoresearch_ci.proposers.base import ProposalContext
from autoresearch_ci.proposers.constants import (
    Constant,
    Move,
    apply_move,
    candidate_moves,
    find_constants,
    has_word,
    show_value,
    similarity,
    step_size,
    value_key,
)
from autoresearch_ci.records import ExperimentRecord, Proposal

TARGET = "train.py"

# train.py may keep one set of sizes per device (GPU_DEPTH, CPU_DEPTH): moving the other device's
# set changes nothing that the run measures, so a proposer told its device leaves those alone.
DEVICE_PREFIXES = {"cuda": "GPU_", "cpu": "CPU_"}

FAILED = ("discard", "crash", "invalid")


@dataclass
class _Past:
    id: str
    old: float
    new: float
    decision: str | None


class OfflineProposer:
    """Seeded hill-climbing over train.py's numeric constants; see the module docstring."""

    def __init__(self, seed: int = 0, target: str = TARGET, device: str | None = None):
        """`device` ("cuda" or "cpu", None for unknown) skips the other device's GPU_/CPU_ constants."""
        self.seed = seed
        self.target = target
        self.name = "offline"
        self.skip_prefixes = tuple(p for d, p in DEVICE_PREFIXES.items() if device and d != device)

    def propose(self, context: ProposalContext) -> Proposal:
        def fail(error: str) -> Proposal:
            return Proposal(ok=False, proposer=self.name, parent_commit=context.parent_commit, error=error)

        source = context.files.get(self.target)
        if source is None:
            return fail(f"{self.target} is not among the editable files {sorted(context.files)}")
        try:
            constants = find_constants(source)
        except SyntaxError as e:
            return fail(f"{self.target} does not parse: {e}")
        constants = {n: c for n, c in constants.items() if not n.startswith(self.skip_prefixes)}
        if not constants:
            return fail(f"{self.target} has no top-level numeric constants (NAME = number) to tune")

        history = self._history(context.recent)
        tried: set[tuple[str, float, float]] = set()
        for name, pasts in history.items():
            for p in pasts:
                tried.add((name, p.old, p.new))
                if p.decision == "keep":  # going back to a value a keep beat is known to be worse
                    tried.add((name, p.new, p.old))
        sibling_names: dict[str, int] = {}
        for s in context.siblings:
            e = s.edit or {}
            if e.get("file", self.target) != self.target or "name" not in e:
                continue
            sibling_names[e["name"]] = sibling_names.get(e["name"], 0) + 1
            old, new = value_key(e.get("old")), value_key(e.get("new"))
            if old is not None and new is not None:
                tried.add((e["name"], old, new))

        rng = random.Random(self._digest(context))
        scored: list[tuple[float, str, float, Move, tuple[str, str]]] = []
        for name in sorted(constants):
            const = constants[name]
            cur = value_key(const.value)
            for move in candidate_moves(const):
                if (name, cur, value_key(move.new)) in tried:
                    continue
                score, why = self._score(const, move, history.get(name, []), sibling_names.get(name, 0))
                score += rng.uniform(0, 25)
                scored.append((score, name, float(move.new), move, why))
        if not scored:
            return fail(
                f"every move on the ladders of {len(constants)} constants of {self.target} has been tried; "
                "nothing left to propose offline"
            )
        scored.sort(key=lambda t: (-t[0], t[1], t[2]))
        _, name, _, move, why = scored[0]
        const = constants[name]
        new_source = apply_move(source, const, move.new)
        check = self._check(source, new_source, const, move)
        if check:
            return fail(check)
        return Proposal(
            proposer=self.name,
            hypothesis=hypothesis(
                name, show_value(const, const.value), show_value(const, move.new), move.new > const.value, why
            ),
            files={self.target: new_source},
            parent_commit=context.parent_commit,
            edit={"name": name, "old": const.value, "new": move.new, "file": self.target},
        )

    def _history(self, recent: list[ExperimentRecord]) -> dict[str, list[_Past]]:
        history: dict[str, list[_Past]] = {}
        for r in recent:
            e = r.edit
            if r.kind != "experiment" or not isinstance(e, dict) or e.get("file", self.target) != self.target:
                continue
            old, new = value_key(e.get("old")), value_key(e.get("new"))
            if not isinstance(e.get("name"), str) or old is None or new is None:
                continue
            decision = r.verdict.decision if r.verdict else None
            history.setdefault(e["name"], []).append(_Past(r.id, old, new, decision))
        return history

    def _score(
        self, const: Constant, move: Move, pasts: list[_Past], siblings: int
    ) -> tuple[float, tuple[str, str]]:
        """Prior worth of a move (before the random draw), and what in the ledger motivated it."""
        cur = value_key(const.value)
        up = move.new > const.value
        step = step_size(const, const.value, move.new)
        scores: list[tuple[float, tuple[str, str]]] = []
        kept_into = next((p for p in reversed(pasts) if p.decision == "keep" and p.new == cur), None)
        if kept_into is not None:
            if (kept_into.new > kept_into.old) == up:
                sim = similarity(step, step_size(const, kept_into.old, kept_into.new))
                scores.append((100 - 30 * sim, ("continue", "")))
            else:
                scores.append((15.0, ("", "")))
        for p in pasts:
            if p.old != cur or p.decision not in FAILED:
                continue
            failed_step = step_size(const, p.old, p.new)
            if (p.new > p.old) != up:
                scores.append(
                    (65 - 10 * similarity(step, failed_step), ("opposite", show_value(const, p.new)))
                )
            elif step is not None and failed_step is not None and step < failed_step:
                scores.append((50.0, ("smaller", show_value(const, p.new))))
            else:
                scores.append((10.0, ("", "")))
        if scores:
            score, why = min(scores)
        else:
            score, why = (60.0 if not pasts else 40.0), ("", "")
        return score - move.cost - 35 * siblings, why

    def _digest(self, context: ProposalContext) -> str:
        h = hashlib.sha256(f"{self.seed}|{context.seed}|{context.parent_commit}".encode())
        for r in context.recent:
            decision = r.verdict.decision if r.verdict else ""
            h.update(f"|{r.id}:{sorted((r.edit or {}).items())!r}:{decision}".encode())
        for s in context.siblings:
            h.update(f"|sib:{sorted((s.edit or {}).items())!r}".encode())
        return h.hexdigest()

    def _check(self, old_source: str, new_source: str, const: Constant, move: Move) -> str | None:
        """The edit compiles and changes exactly one constant to the intended value."""
        try:
            compile(new_source, self.target, "exec")
            after = find_constants(new_source)
        except (SyntaxError, ValueError) as e:
            return f"internal error: moving {const.name} produced a file that does not compile: {e}"
        before = {n: c.value for n, c in find_constants(old_source).items()}
        now = {n: c.value for n, c in after.items()}
        expected = {**before, const.name: move.new}
        if now != expected or type(now[const.name]) is not type(const.value):
            return f"internal error: moving {const.name} to {move.new} changed more than that constant"
        return None


# Why a move might help, by the words in the constant's name: (raising, lowering). First match wins.
REASONS: list[tuple[tuple[str, ...], str, str]] = [
    (
        ("WARMUP",),
        "stabilize the first steps of training",
        "spend more of the budget at the full learning rate",
    ),
    (
        ("WARMDOWN", "COOLDOWN"),
        "let a longer decay settle the weights into a lower loss",
        "keep the learning rate high for longer",
    ),
    (
        ("FINAL_LR", "MIN_LR"),
        "keep learning alive at the end of the schedule",
        "anneal more fully by the end of the budget",
    ),
    (
        ("LR", "LEARNING_RATE"),
        "speed up learning within the fixed time budget",
        "make optimization more stable and cut loss spikes",
    ),
    (
        ("WEIGHT_DECAY", "WD"),
        "regularize more and generalize better to the validation text",
        "let the model fit faster within the short budget",
    ),
    (
        ("BETA", "MOMENTUM", "EMA"),
        "smooth the updates with a longer memory",
        "let the optimizer react faster to the changing loss",
    ),
    (
        ("DROPOUT",),
        "regularize more and generalize better",
        "let a small model use all its capacity in a short run",
    ),
    (
        ("DEPTH", "LAYER"),
        "add capacity that pays for its slower steps",
        "fit more optimizer steps into the fixed budget",
    ),
    (("HEAD_DIM",), "give each attention head a wider subspace", "allow more heads at the same width"),
    (("HEAD",), "let attention specialize across more heads", "give each head a wider subspace"),
    (
        ("BATCH",),
        "give less noisy gradients and use the hardware better",
        "allow more optimizer steps within the fixed budget",
    ),
    (
        ("DIM", "WIDTH", "EMBD", "EMBED", "HIDDEN", "ASPECT"),
        "add capacity per layer",
        "make each step cheaper so more of them fit the budget",
    ),
    (("CLIP",), "let larger useful updates through", "tame loss spikes"),
    (("CAP",), "leave the logits freer", "keep the logits bounded for stability"),
    (("EPS",), "damp the updates of rarely seen parameters", "sharpen the adaptive step sizes"),
    (("INIT", "STD", "SCALE"), "start from stronger signals", "start from a quieter initialization"),
]


def hypothesis(name: str, old: str, new: str, up: bool, why: tuple[str, str]) -> str:
    """One sentence: what moves, and why it might lower val_bpb."""
    for words, raise_reason, lower_reason in REASONS:
        if has_word(name, words):
            reason = raise_reason if up else lower_reason
            break
    else:
        reason = f"lower val_bpb if the current value is too {'low' if up else 'high'} for this budget"
    verb = "Raising" if up else "Lowering"
    kind, tried = why
    if kind == "continue":
        return (
            f"{verb} {name} further from {old} to {new} should {reason}, as the last step this way was kept."
        )
    move = f"{verb} {name} from {old} to {new} should {reason}"
    if kind == "opposite":
        return f"{move}, since moving it to {tried} did not help."
    if kind == "smaller":
        return f"{move}, a smaller step than {tried}, which did not help."
    return f"{move}."
