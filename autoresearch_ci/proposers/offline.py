"""The offline proposer: a seeded search over train.py's top-level numeric constants.

No LLM, no network. Each proposal moves exactly one module-level constant (`MATRIX_LR = 0.02`,
`DEPTH = 4`, `TOTAL_BATCH_SIZE = 2**19`) by one step of a small ladder, rewriting only that literal in
the source so every other byte of train.py stays as it was. The search learns from the ledger:

- an edit already tried from the same value (same name, old, new) is never proposed again, nor one a
  sibling of this tick already proposed;
- after a kept move, the same constant keeps going the same way with about the same step;
- after a discarded or crashed move, the opposite direction or a smaller step is tried;
- constants never tried come first-ish; wide steps come only once the near ones are used up.

Ties are broken by a random draw seeded from the proposer's seed and a digest of the context, so the
same seed and the same ledger always give the same proposal.
"""

from __future__ import annotations

import ast
import hashlib
import math
import random
from dataclasses import dataclass
from decimal import Decimal

from autoresearch_ci.proposers.base import ProposalContext
from autoresearch_ci.records import ExperimentRecord, Proposal

TARGET = "train.py"

# Names never tuned: the seed (luck is not research) and knobs that only change what is printed.
SKIP_WORDS = ("SEED", "LOG_EVERY", "PRINT_EVERY", "VERBOSE")
# train.py may keep one set of sizes per device (GPU_DEPTH, CPU_DEPTH): moving the other device's
# set changes nothing that the run measures, so a proposer told its device leaves those alone.
DEVICE_PREFIXES = {"cuda": "GPU_", "cpu": "CPU_"}

# Names whose values are layer sizes: a power of two stays a power of two, a multiple of 64 stays one.
SIZE_WORDS = ("DIM", "HEAD", "BATCH", "EMBD", "EMBED", "WIDTH", "HIDDEN", "CHANNEL")
# Names whose float values live in (0, 1]; the ones in STRICT_FRACTION_WORDS must stay below 1.
FRACTION_WORDS = ("RATIO", "FRAC", "BETA", "MOMENTUM", "DROPOUT", "PROB", "EMA")
STRICT_FRACTION_WORDS = ("BETA", "MOMENTUM", "DROPOUT", "PROB", "EMA")

# (factor, cost) ladders. Cost 0 is the natural first step; larger costs are the widened steps that
# only win once the near ones have been tried. 1.2 and 0.85 are the "smaller step" after a failure.
FLOAT_UP = ((1.4, 0), (2.0, 5), (1.2, 10), (3.0, 25), (5.0, 50), (10.0, 75))
FLOAT_DOWN = ((0.7, 0), (0.5, 5), (0.85, 10), (0.33, 25), (0.2, 50), (0.1, 75))
ZERO_FLOAT = ((0.01, 5), (0.1, 10), (0.001, 30), (0.3, 40))
FAILED = ("discard", "crash", "invalid")


@dataclass(frozen=True)
class Constant:
    """One tunable module-level constant and where its literal sits in the source (byte offsets)."""

    name: str
    value: int | float
    text: str  # the literal as written: "0.02", "-1e-3", "19" (the exponent of 2**19)
    start: int
    end: int
    pow2_exponent: bool = False  # the literal is k in `NAME = 2**k`

    @property
    def is_int(self) -> bool:
        return isinstance(self.value, int)


@dataclass(frozen=True)
class Move:
    name: str
    new: int | float
    cost: int


def find_constants(source: str) -> dict[str, Constant]:
    """Module-level `NAME = <int|float literal>` (also `-literal` and `2**k`), UPPERCASE, not SKIP_WORDS.

    A name assigned more than once at module level is skipped: editing one of its literals would
    not say what the program actually uses.
    """
    tree = ast.parse(source)
    data = source.encode("utf-8")
    line_starts = [0] + [i + 1 for i, b in enumerate(data) if b == 0x0A]

    def offset(lineno: int, col: int) -> int:
        return line_starts[lineno - 1] + col

    counts: dict[str, int] = {}
    found: dict[str, Constant] = {}
    for node in tree.body:
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            counts[node.target.id] = counts.get(node.target.id, 0) + 1
            continue
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        if len(targets) != 1 or len(names) != 1:
            continue
        name = names[0]
        if not (name.isupper() and name.strip("_")) or _has(name, SKIP_WORDS):
            continue
        parsed = _literal(value)
        if parsed is None:
            continue
        span_node, number, pow2 = parsed
        start = offset(span_node.lineno, span_node.col_offset)
        end = offset(span_node.end_lineno, span_node.end_col_offset)
        text = data[start:end].decode("utf-8")
        found[name] = Constant(name, number, text, start, end, pow2)
    return {n: c for n, c in found.items() if counts.get(n) == 1}


def _literal(node: ast.expr) -> tuple[ast.expr, int | float, bool] | None:
    """(node whose span to rewrite, numeric value, is a 2**k exponent) or None."""

    def number(n: ast.expr) -> int | float | None:
        if isinstance(n, ast.Constant) and type(n.value) in (int, float):
            return n.value
        return None

    if (v := number(node)) is not None:
        return node, v, False
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and (v := number(node.operand)) is not None
    ):
        return node, -v, False
    if (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Pow)
        and number(node.left) == 2
        and type(node.left.value) is int
        and type(number(node.right)) is int
        and 0 <= node.right.value <= 62
    ):
        return node.right, 2**node.right.value, True
    return None


def apply_move(source: str, const: Constant, new: int | float) -> str:
    """The source with exactly `const`'s literal replaced by `new`, formatted like the old one."""
    data = source.encode("utf-8")
    text = str(int(new).bit_length() - 1) if const.pow2_exponent else format_literal(new, const.text)
    return (data[: const.start] + text.encode("utf-8") + data[const.end :]).decode("utf-8")


def _show(const: Constant, value: float) -> str:
    """A value as the source would write it: 0.028, 3e-4, 2**20."""
    if const.is_int:
        n = int(value)
        return f"2**{n.bit_length() - 1}" if const.pow2_exponent and n > 0 and n & (n - 1) == 0 else str(n)
    return format_literal(float(value), const.text)


def format_literal(value: int | float, like: str) -> str:
    """Write `value` in the style of the literal `like` (underscores, hex, scientific notation)."""
    sign = "-" if value < 0 else ""
    mag = abs(value)
    body = like.lstrip("-+ \t")
    if isinstance(value, int):
        if body.lower().startswith("0x"):
            return f"{sign}{mag:#x}"
        return f"{sign}{mag:_}" if "_" in body else f"{sign}{mag}"
    if "e" in body.lower():
        mantissa, exp = f"{mag:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        e = "E" if "E" in body else "e"
        return f"{sign}{mantissa}{e}{int(exp)}"
    text = format(Decimal(repr(mag)), "f")
    return f"{sign}{text}" if "." in text else f"{sign}{text}.0"


def _round3(x: float) -> float:
    return float(f"{x:.3g}")


def _key(v) -> float | None:
    """A comparable form of a ledger value: 4, 4.0 and "4" are the same; non-numbers are None."""
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return float(f"{f:.9g}") if math.isfinite(f) else None


def _has(name: str, words: tuple[str, ...]) -> bool:
    return any(w in name for w in words)


def candidate_moves(const: Constant) -> list[Move]:
    """Every move on this constant's ladder, each new value distinct and within sane bounds."""
    v, name = const.value, const.name
    raw: list[tuple[int | float, int]] = []
    if const.is_int:
        if const.pow2_exponent or (_has(name, SIZE_WORDS) and v >= 2 and v & (v - 1) == 0):
            raw = [(v * 2, 0), (v // 2, 0), (v * 4, 30), (v // 4, 30)]
        elif _has(name, SIZE_WORDS) and v > 0 and min(64, v & -v) >= 8:
            g = min(64, v & -v)  # keep the multiple the value already has

            def snap(x: float) -> int:
                return max(g, int(round(x / g)) * g)

            raw = [(v + g, 0), (v - g, 0), (snap(v * 1.25), 5), (snap(v * 0.75), 5)]
            raw += [(snap(v * 2), 10), (snap(v / 2), 10), (snap(v * 4), 35), (snap(v / 4), 35)]
        elif v == 0:
            raw = [(1, 10), (2, 30)]
        else:
            mag, sgn = abs(v), (1 if v > 0 else -1)
            small = 0 if mag < 20 else 30  # +-1 means nothing on a large count
            mags = [(mag + 1, small), (mag - 1, small), (round(mag * 1.25), 5), (round(mag * 0.75), 5)]
            mags += [(mag * 2, 10), (mag // 2, 10), (mag * 4, 35), (mag // 4, 35)]
            raw = [(sgn * m, c) for m, c in mags if m >= 1]
    else:
        if v == 0:
            raw = list(ZERO_FLOAT)
        else:
            mag, sgn = abs(v), (1.0 if v > 0 else -1.0)
            fraction = v > 0 and _has(name, FRACTION_WORDS) and v <= 1
            for f, c in FLOAT_UP + FLOAT_DOWN:
                if fraction and 0.8 <= v < 1:  # move 1 - v instead, so 0.95 -> 0.965, never 1.0
                    new = float(f"{1 - _round3((1 - v) * f):.12g}")
                else:
                    new = sgn * _round3(mag * f)
                raw.append((new, c))
            if fraction:
                upper_ok = (lambda x: x < 1) if _has(name, STRICT_FRACTION_WORDS) else (lambda x: x <= 1)
                raw = [(x, c) for x, c in raw if x > 0 and upper_ok(x)]
    seen: dict[float, Move] = {}
    for new, cost in raw:
        if const.is_int:
            new = int(new)
            if v > 0 and new < 1:
                continue
        else:
            new = float(new)
            if v != 0 and (new == 0 or (new > 0) != (v > 0)):
                continue
        k = _key(new)
        if k is None or k == _key(v) or (k in seen and seen[k].cost <= cost):
            continue
        seen[k] = Move(name, new, cost)
    return sorted(seen.values(), key=lambda m: (m.cost, m.new))


def _space(const: Constant, x: float) -> float | None:
    """Where step sizes are measured: log|x|, or log(1 - x) for fractions near 1."""
    if x == 0:
        return None
    if not const.is_int and _has(const.name, FRACTION_WORDS) and 0.8 <= const.value < 1:
        return math.log(1 - x) if x < 1 else None
    return math.log(abs(x))


def _step(const: Constant, old: float, new: float) -> float | None:
    a, b = _space(const, old), _space(const, new)
    return None if a is None or b is None else abs(b - a)


def _similarity(a: float | None, b: float | None) -> float:
    """0 for the same step size, growing with the log of their ratio."""
    if not a or not b:
        return 0.5
    return abs(math.log(a / b))


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
            old, new = _key(e.get("old")), _key(e.get("new"))
            if old is not None and new is not None:
                tried.add((e["name"], old, new))

        rng = random.Random(self._digest(context))
        scored: list[tuple[float, str, float, Move, tuple[str, str]]] = []
        for name in sorted(constants):
            const = constants[name]
            cur = _key(const.value)
            for move in candidate_moves(const):
                if (name, cur, _key(move.new)) in tried:
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
                name, _show(const, const.value), _show(const, move.new), move.new > const.value, why
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
            old, new = _key(e.get("old")), _key(e.get("new"))
            if not isinstance(e.get("name"), str) or old is None or new is None:
                continue
            decision = r.verdict.decision if r.verdict else None
            history.setdefault(e["name"], []).append(_Past(r.id, old, new, decision))
        return history

    def _score(
        self, const: Constant, move: Move, pasts: list[_Past], siblings: int
    ) -> tuple[float, tuple[str, str]]:
        """Prior worth of a move (before the random draw), and what in the ledger motivated it."""
        cur = _key(const.value)
        up = move.new > const.value
        step = _step(const, const.value, move.new)
        scores: list[tuple[float, tuple[str, str]]] = []
        kept_into = next((p for p in reversed(pasts) if p.decision == "keep" and p.new == cur), None)
        if kept_into is not None:
            if (kept_into.new > kept_into.old) == up:
                sim = _similarity(step, _step(const, kept_into.old, kept_into.new))
                scores.append((100 - 30 * sim, ("continue", "")))
            else:
                scores.append((15.0, ("", "")))
        for p in pasts:
            if p.old != cur or p.decision not in FAILED:
                continue
            failed_step = _step(const, p.old, p.new)
            if (p.new > p.old) != up:
                scores.append((65 - 10 * _similarity(step, failed_step), ("opposite", _show(const, p.new))))
            elif step is not None and failed_step is not None and step < failed_step:
                scores.append((50.0, ("smaller", _show(const, p.new))))
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
        if _has(name, words):
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
