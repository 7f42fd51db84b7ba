"""The Summary section of resources.md: What works / What does not / Open ideas, each line citing
the ledger ids that show it.

Offline it is built deterministically from the ledger (`summarize`): experiments grouped by the
constant they moved, or by the topic of their hypothesis. An LLM may write it instead (`llm_prompt`);
its answer is used only when `llm_problem` finds nothing wrong with it (missing sections, invented ids,
no citations, a heading that would break the file).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from autoresearch_ci.records import ExperimentRecord
from autoresearch_ci.report.text import num, one_line

ID_LIKE = re.compile(r"^\d{8}-\d{6}-[0-9a-z-]+$")
MAX_CLAIMS = 12

# Topics for hypotheses that carry no structured edit (LLM proposals); first match wins.
TOPICS = [
    ("learning rate", r"\blr\b|learning[ _-]?rate"),
    ("weight decay", r"weight[ _-]?decay"),
    ("warm-up / warm-down", r"warm[ _-]?(up|down)"),
    ("batch size", r"batch"),
    ("optimizer", r"adam|muon|optimi[sz]er|\bsgd\b|momentum|beta[12]?\b|newton"),
    ("normalisation", r"norm\b|norm[ -]|layernorm|rmsnorm|qk-norm"),
    ("depth", r"depth|n_layers?|(more|fewer|number of) layers"),
    ("width / aspect ratio", r"width|n_embd|hidden|aspect|dim\b"),
    ("activation / MLP", r"relu|gelu|swiglu|silu|activation|mlp"),
    ("attention", r"attention|attn|rotary|rope|window|heads?\b|kv\b"),
    ("initialisation", r"\binit|zero-init"),
    ("embeddings", r"embed|lm_head|untie|tied"),
    ("regularisation", r"dropout|z-loss|soft-?cap|label smoothing"),
    ("schedule", r"schedule|cosine|decay|anneal"),
]


@dataclass
class _Group:
    label: str
    kept: list[ExperimentRecord] = field(default_factory=list)
    discarded: list[ExperimentRecord] = field(default_factory=list)
    crashed: list[ExperimentRecord] = field(default_factory=list)
    name: str | None = None  # the constant, for a structured edit
    direction: str | None = None  # "raise" / "lower"
    values: list[str] = field(default_factory=list)  # "old → new" of each try

    def tried(self) -> int:
        return len(self.kept) + len(self.discarded) + len(self.crashed)


def _number(x) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def _group_key(r: ExperimentRecord) -> tuple[str, str | None, str | None, str]:
    """(label, constant name, direction, "old → new") for grouping."""
    if r.edit and r.edit.get("name"):
        name = str(r.edit["name"])
        old, new = _number(r.edit.get("old")), _number(r.edit.get("new"))
        change = f"{r.edit.get('old')} → {r.edit.get('new')}"
        if old is not None and new is not None and old != new:
            direction = "raise" if new > old else "lower"
            return f"{'raising' if direction == 'raise' else 'lowering'} {name}", name, direction, change
        return f"changing {name}", name, None, change
    text = (r.hypothesis or "").lower()
    for label, pattern in TOPICS:
        if re.search(pattern, text):
            return label, None, None, ""
    return "other ideas", None, None, ""


def _groups(records: Iterable[ExperimentRecord]) -> list[_Group]:
    groups: dict[str, _Group] = {}
    for r in records:
        v = r.verdict
        if r.kind != "experiment" or v is None or v.decision in ("infra-error", "proposal-failed"):
            continue
        label, name, direction, change = _group_key(r)
        g = groups.setdefault(label, _Group(label=label, name=name, direction=direction))
        if change and change not in g.values:
            g.values.append(change)
        {"keep": g.kept, "discard": g.discarded}.get(v.decision, g.crashed).append(r)
    return list(groups.values())


def _ids(rs: Sequence[ExperimentRecord], limit: int = 6) -> str:
    shown = ", ".join(f"`{r.id}`" for r in rs[:limit])
    return shown + (f" and {len(rs) - limit} more" if len(rs) > limit else "")


def _mean_delta(rs: Sequence[ExperimentRecord]) -> float | None:
    ds = [r.verdict.delta for r in rs if r.verdict and r.verdict.delta is not None]
    return sum(ds) / len(ds) if ds else None


def _mean_threshold(rs: Sequence[ExperimentRecord]) -> float | None:
    ts = [r.verdict.threshold for r in rs if r.verdict and r.verdict.threshold is not None]
    return sum(ts) / len(ts) if ts else None


def summarize(records: Iterable[ExperimentRecord]) -> str:
    """The deterministic Summary body: What works / What does not / Open ideas, with ledger ids."""
    groups = _groups(records)
    works, fails, ideas = [], [], []
    tried_dirs = {(g.name, g.direction) for g in groups if g.name}
    for g in groups:
        values = f" ({', '.join(one_line(v) for v in g.values[:4])})" if g.values else ""
        n = g.tried()
        if g.kept:
            best = (
                min(r.verdict.delta for r in g.kept if r.verdict.delta is not None)
                if any(r.verdict.delta is not None for r in g.kept)
                else None
            )
            line = f"**{one_line(g.label)}**{values}: kept {len(g.kept)} of {n}"
            if best is not None:
                line += f", best Δ {num(best, signed=True)}"
            line += f". Kept: {_ids(g.kept)}"
            if g.discarded or g.crashed:
                line += f"; not kept: {_ids(g.discarded + g.crashed)}"
            works.append((best if best is not None else 0.0, line + "."))
            if g.name and g.direction:
                ideas.append(
                    (
                        0.0,
                        f"Push further: keep {'raising' if g.direction == 'raise' else 'lowering'} "
                        f"`{one_line(g.name)}` past its last kept value (from {_ids(g.kept, 3)}).",
                    )
                )
            continue
        mean = _mean_delta(g.discarded)
        thr = _mean_threshold(g.discarded)
        if g.discarded and mean is not None and mean < 0:
            ideas.append(
                (
                    mean,
                    f"**{one_line(g.label)}**{values} looked better but within the noise: mean Δ "
                    f"{num(mean, signed=True)} vs a bar of −{num(thr)} over {len(g.discarded)} tr"
                    f"{'y' if len(g.discarded) == 1 else 'ies'} ({_ids(g.discarded)}); "
                    "worth a retest with more seeds.",
                )
            )
        elif g.discarded:
            what = f"no gain, mean Δ {num(mean, signed=True)}" if mean is not None else "no gain"
            line = f"**{one_line(g.label)}**{values}: 0 of {n} kept ({what}): {_ids(g.discarded)}"
            if g.crashed:
                line += f"; crashed or invalid: {_ids(g.crashed)}"
            fails.append((-(mean or 0.0), line + "."))
        if g.crashed and not g.discarded:
            fails.append(
                (
                    0.0,
                    f"**{one_line(g.label)}**{values}: every try crashed or was invalid ({_ids(g.crashed)}).",
                )
            )
        if g.name and g.direction and not g.kept:
            other = "lower" if g.direction == "raise" else "raise"
            if (g.name, other) not in tried_dirs:
                ideas.append(
                    (
                        1.0,
                        f"Try the other direction: {other} `{one_line(g.name)}` "
                        f"({g.direction} did not help: {_ids(g.discarded + g.crashed, 3)}).",
                    )
                )

    def block(title: str, items: list[tuple[float, str]], empty: str) -> str:
        items = sorted(items, key=lambda t: t[0])[:MAX_CLAIMS]
        body = "\n".join(f"- {line}" for _, line in items) if items else f"_{empty}_"
        return f"### {title}\n\n{body}\n"

    return "\n".join(
        [
            block("What works", works, "Nothing kept yet."),
            block("What does not", fails, "No failed direction yet."),
            block("Open ideas", ideas, "None yet."),
        ]
    )


def llm_prompt(deterministic: str, records: Sequence[ExperimentRecord]) -> str:
    rows = []
    for r in records[-200:]:
        v = r.verdict
        if r.kind != "experiment" or v is None:
            continue
        rows.append(
            f"{r.id}\t{v.decision}\t{num(v.delta, signed=True)}\t{num(v.threshold)}\t"
            f"{one_line(r.hypothesis, 160)}"
        )
    return (
        "You maintain the Summary of resources.md for an automated research loop that edits train.py "
        "to lower val_bpb (lower is better). Rewrite the summary below from the experiment table. "
        "Output markdown with exactly three sections, '### What works', '### What does not' and "
        "'### Open ideas', each a bullet list. Every bullet must cite the ledger ids that support it, "
        "in backticks, taken from the table; never invent an id. Be concise: at most 12 bullets per "
        "section. Output only the three sections.\n\n"
        f"Current deterministic summary:\n\n{deterministic}\n\n"
        "Experiments (id, decision, delta vs baseline, threshold a keep needed, hypothesis):\n\n"
        + "\n".join(rows)
    )


def llm_problem(text: str | None, known: set[str]) -> str | None:
    """Why the LLM's summary is unusable (None: it is fine)."""
    if not text or not text.strip():
        return "empty answer"
    for heading in ("### What works", "### What does not", "### Open ideas"):
        if heading.lower() not in text.lower():
            return f"missing section {heading!r}"
    cited = {t for t in re.findall(r"`([^`\s]+)`", text) if ID_LIKE.match(t)}
    unknown = cited - known
    if unknown:
        return f"cites ids that are not in the ledger: {', '.join(sorted(unknown)[:5])}"
    if known and not cited:
        return "cites no ledger id"
    if re.search(r"^## ", text, flags=re.MULTILINE):
        return "contains a level-2 heading, which would break the file's sections"
    return None
