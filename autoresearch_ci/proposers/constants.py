"""train.py's tunable constants, for the offline proposer: finding them, the ladders of moves each
one can make, and writing a moved value back in the literal's own style.

A constant is a module-level `NAME = <int|float literal>` (also `-literal` and `2**k`), UPPERCASE.
Moving it rewrites only that literal's bytes, so every other byte of train.py stays as it was.
Step sizes are compared in log space (`step_size`, `similarity`) so the search can say "a smaller
step than the one that failed" or "about the same step as the one that was kept".
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from decimal import Decimal

# Names never tuned: the seed (luck is not research) and knobs that only change what is printed.
SKIP_WORDS = ("SEED", "LOG_EVERY", "PRINT_EVERY", "VERBOSE")
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
        if not (name.isupper() and name.strip("_")) or has_word(name, SKIP_WORDS):
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


def show_value(const: Constant, value: float) -> str:
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


def value_key(v) -> float | None:
    """A comparable form of a ledger value: 4, 4.0 and "4" are the same; non-numbers are None."""
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return float(f"{f:.9g}") if math.isfinite(f) else None


def has_word(name: str, words: tuple[str, ...]) -> bool:
    return any(w in name for w in words)


def candidate_moves(const: Constant) -> list[Move]:
    """Every move on this constant's ladder, each new value distinct and within sane bounds."""
    v, name = const.value, const.name
    raw: list[tuple[int | float, int]] = []
    if const.is_int:
        if const.pow2_exponent or (has_word(name, SIZE_WORDS) and v >= 2 and v & (v - 1) == 0):
            raw = [(v * 2, 0), (v // 2, 0), (v * 4, 30), (v // 4, 30)]
        elif has_word(name, SIZE_WORDS) and v > 0 and min(64, v & -v) >= 8:
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
            fraction = v > 0 and has_word(name, FRACTION_WORDS) and v <= 1
            for f, c in FLOAT_UP + FLOAT_DOWN:
                if fraction and 0.8 <= v < 1:  # move 1 - v instead, so 0.95 -> 0.965, never 1.0
                    new = float(f"{1 - _round3((1 - v) * f):.12g}")
                else:
                    new = sgn * _round3(mag * f)
                raw.append((new, c))
            if fraction:
                upper_ok = (lambda x: x < 1) if has_word(name, STRICT_FRACTION_WORDS) else (lambda x: x <= 1)
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
        k = value_key(new)
        if k is None or k == value_key(v) or (k in seen and seen[k].cost <= cost):
            continue
        seen[k] = Move(name, new, cost)
    return sorted(seen.values(), key=lambda m: (m.cost, m.new))


def _space(const: Constant, x: float) -> float | None:
    """Where step sizes are measured: log|x|, or log(1 - x) for fractions near 1."""
    if x == 0:
        return None
    if not const.is_int and has_word(const.name, FRACTION_WORDS) and 0.8 <= const.value < 1:
        return math.log(1 - x) if x < 1 else None
    return math.log(abs(x))


def step_size(const: Constant, old: float, new: float) -> float | None:
    a, b = _space(const, old), _space(const, new)
    return None if a is None or b is None else abs(b - a)


def similarity(a: float | None, b: float | None) -> float:
    """0 for the same step size, growing with the log of their ratio."""
    if not a or not b:
        return 0.5
    return abs(math.log(a / b))
