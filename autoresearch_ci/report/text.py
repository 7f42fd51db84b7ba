"""The formatting rules every text of the report shares: numbers, one-line text, code fences."""

from __future__ import annotations

import math

from autoresearch_ci.records import ExperimentRecord, Verdict

MISSING = "—"


def one_line(text: str | None, limit: int | None = None) -> str:
    """Single-line, HTML-inert text: a hypothesis can never open a heading, a comment or a tag."""
    s = " ".join((text or "").split()).replace("<", "&lt;")  # no "<": no tag, no comment, no fake marker
    if limit and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s


def num(x: float | None, signed: bool = False) -> str:
    """A val_bpb-sized number with six decimals (a dash when there is none)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return MISSING
    return f"{x:+.6f}" if signed else f"{x:.6f}"


def mean_ok(record: ExperimentRecord) -> str:
    """The mean val_bpb of a record's ok runs, four decimals, for terminal lines ("-" when none)."""
    vals = record.ok_values()
    return f"{sum(vals) / len(vals):.4f}" if vals else "-"


def fence(text: str) -> str:
    """A code block whose content cannot close it."""
    return "```\n" + text.replace("```", "ʼʼʼ").rstrip() + "\n```"


def paired_delta(v: Verdict | None, digits: int = 4) -> str:
    """'paired Δ -0.0123 [-0.0180, -0.0066] (3 pairs)' for a paired verdict, 'Δ -0.0123' for an
    older (unpaired) one, MISSING without a delta. The interval is the 95% one of the mean."""
    if v is None or v.delta is None or not math.isfinite(v.delta):
        return MISSING
    if not v.paired:
        return f"Δ {v.delta:+.{digits}f}"
    ci = ""
    if v.delta_low is not None and v.delta_high is not None:
        ci = f" [{v.delta_low:+.{digits}f}, {v.delta_high:+.{digits}f}]"
    return f"paired Δ {v.delta:+.{digits}f}{ci} ({v.pairs} pair{'' if v.pairs == 1 else 's'})"
