"""resources.md: what the loop has learned, every claim tied to the experiments that show it.

The file has two parts the loop maintains:

- "## Log": one entry per verdict (hypothesis, result, delta against the noise, verdict, ledger id,
  commit and PR). It only grows; an entry already there is not written again.
- "## Summary": rewritten by `condense()` every few verdicts into What works / What does not /
  Open ideas, each line citing ledger ids. Offline it is built deterministically from the ledger
  (experiments grouped by the constant they moved, or by the topic of their hypothesis); given a
  `summarizer` (an LLM, text -> text) it asks it instead and falls back to the deterministic summary
  when the answer fails a check (missing sections, invented ids, no citations).

Anything else in the file (a human's notes above, other sections) is left as it is.

This module also renders the markdown the loop shows people: `render_results_table()` for status
output and job summaries, `render_pr_comment()` for the results comment on a candidate's PR.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from autoresearch_ci.records import ExperimentRecord

SUMMARY = "## Summary"
LOG = "## Log"
SUMMARY_MARK = re.compile(r"<!-- autoresearch-ci:summary verdicts=(\d+)")
ENTRY_MARK = "<!-- ledger:{id} -->"
PR_COMMENT_MARK = "<!-- autoresearch-ci:result -->"
ID_LIKE = re.compile(r"^\d{8}-\d{6}-[0-9a-z-]+$")
MAX_CLAIMS = 12

SKELETON = f"""# Resources

What the research loop has learned about `train.py`. Every claim cites the ledger experiments
(`ledger/experiments.jsonl`) that show it. The Summary is rewritten from the ledger every few
verdicts; the Log only grows.

{SUMMARY}

_No verdicts yet._

{LOG}
"""

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


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _one_line(text: str | None, limit: int | None = None) -> str:
    """Single-line, HTML-inert text: a hypothesis can never open a heading, a comment or a tag."""
    s = " ".join((text or "").split()).replace("<", "&lt;")  # no "<": no tag, no comment, no fake marker
    if limit and len(s) > limit:
        s = s[: limit - 1] + "…"
    return s


def _f(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:+.6f}" if signed else f"{x:.6f}"


def _section_span(text: str, heading: str) -> tuple[int, int] | None:
    """(start of the heading line, start of the next '## ' heading or end of text)."""
    m = re.search(rf"^{re.escape(heading)}[ \t]*$", text, flags=re.MULTILINE)
    if not m:
        return None
    nxt = re.search(r"^## ", text[m.end() :], flags=re.MULTILINE)
    return m.start(), (m.end() + nxt.start()) if nxt else len(text)


# ----------------------------------------------------------------------------------------------
# the log


def render_entry(r: ExperimentRecord) -> str:
    v = r.verdict
    decision = v.decision if v else "pending"
    head = f"### {r.id} · {decision}"
    if v and v.candidate_mean is not None:
        head += f" · val_bpb {_f(v.candidate_mean)}"
    lines = [head, ENTRY_MARK.format(id=r.id), "", f"- **Hypothesis:** {_one_line(r.hypothesis) or '—'}"]
    if r.edit:
        lines.append(
            f"- **Edit:** `{_one_line(str(r.edit.get('name')))}` "
            f"{_one_line(str(r.edit.get('old')))} → {_one_line(str(r.edit.get('new')))}"
        )
    if v and v.delta is not None:
        noise = f", noise σ {_f(v.noise)}" if v.noise is not None else ""
        lines.append(
            f"- **Result:** val_bpb {_f(v.candidate_mean)} vs baseline {_f(v.baseline_mean)}: "
            f"Δ {_f(v.delta, signed=True)} (a keep needed < −{_f(v.threshold)}{noise})"
        )
    if v:
        lines.append(
            f"- **Verdict:** {v.decision}{' (confirmed by a second run)' if v.confirmed else ''}: "
            f"{_one_line(v.reason, 600)}"
        )
    evidence = [
        f"ledger `{r.id}`",
        f"{r.preset}/{r.runner}" + (f" on {_one_line(r.device)}" if r.device else ""),
    ]
    if r.candidate_commit:
        evidence.append(f"commit `{r.candidate_commit[:10]}`")
    if r.merged_commit:
        evidence.append(f"merged as `{r.merged_commit[:10]}`")
    if r.pr_url:
        evidence.append(f"[PR #{r.pr_number}]({r.pr_url})" if r.pr_number else f"[PR]({r.pr_url})")
    elif r.archived_ref:
        evidence.append(f"kept at `{_one_line(r.archived_ref)}`")
    lines.append(f"- **Evidence:** {' · '.join(evidence)}")
    return "\n".join(lines) + "\n"


def append_entry(path: Path | str, record: ExperimentRecord) -> bool:
    """Add the record's entry at the end of the Log section. False when it is already there (or the
    record is a baseline measurement, which is no learning)."""
    path = Path(path)
    if record.kind != "experiment":
        return False
    text = path.read_text(encoding="utf-8") if path.exists() else SKELETON
    if ENTRY_MARK.format(id=record.id) in text:
        return False
    span = _section_span(text, LOG)
    if span is None:
        text = text.rstrip("\n") + f"\n\n{LOG}\n"
        span = _section_span(text, LOG)
    _, end = span
    before, after = text[:end].rstrip("\n") + "\n\n", text[end:]
    text = before + render_entry(record) + ("\n" + after if after else "")
    _atomic_write(path, text)
    return True


# ----------------------------------------------------------------------------------------------
# the summary


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
        values = f" ({', '.join(_one_line(v) for v in g.values[:4])})" if g.values else ""
        n = g.tried()
        if g.kept:
            best = (
                min(r.verdict.delta for r in g.kept if r.verdict.delta is not None)
                if any(r.verdict.delta is not None for r in g.kept)
                else None
            )
            line = f"**{_one_line(g.label)}**{values}: kept {len(g.kept)} of {n}"
            if best is not None:
                line += f", best Δ {_f(best, signed=True)}"
            line += f". Kept: {_ids(g.kept)}"
            if g.discarded or g.crashed:
                line += f"; not kept: {_ids(g.discarded + g.crashed)}"
            works.append((best if best is not None else 0.0, line + "."))
            if g.name and g.direction:
                ideas.append(
                    (
                        0.0,
                        f"Push further: keep {'raising' if g.direction == 'raise' else 'lowering'} "
                        f"`{_one_line(g.name)}` past its last kept value (from {_ids(g.kept, 3)}).",
                    )
                )
            continue
        mean = _mean_delta(g.discarded)
        thr = _mean_threshold(g.discarded)
        if g.discarded and mean is not None and mean < 0:
            ideas.append(
                (
                    mean,
                    f"**{_one_line(g.label)}**{values} looked better but within the noise: mean Δ "
                    f"{_f(mean, signed=True)} vs a bar of −{_f(thr)} over {len(g.discarded)} tr"
                    f"{'y' if len(g.discarded) == 1 else 'ies'} ({_ids(g.discarded)}); "
                    "worth a retest with more seeds.",
                )
            )
        elif g.discarded:
            what = f"no gain, mean Δ {_f(mean, signed=True)}" if mean is not None else "no gain"
            line = f"**{_one_line(g.label)}**{values}: 0 of {n} kept ({what}): {_ids(g.discarded)}"
            if g.crashed:
                line += f"; crashed or invalid: {_ids(g.crashed)}"
            fails.append((-(mean or 0.0), line + "."))
        if g.crashed and not g.discarded:
            fails.append(
                (
                    0.0,
                    f"**{_one_line(g.label)}**{values}: every try crashed or was invalid "
                    f"({_ids(g.crashed)}).",
                )
            )
        if g.name and g.direction and not g.kept:
            other = "lower" if g.direction == "raise" else "raise"
            if (g.name, other) not in tried_dirs:
                ideas.append(
                    (
                        1.0,
                        f"Try the other direction: {other} `{_one_line(g.name)}` "
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


def _summary_prompt(deterministic: str, records: Sequence[ExperimentRecord]) -> str:
    rows = []
    for r in records[-200:]:
        v = r.verdict
        if r.kind != "experiment" or v is None:
            continue
        rows.append(
            f"{r.id}\t{v.decision}\t{_f(v.delta, signed=True)}\t{_f(v.threshold)}\t"
            f"{_one_line(r.hypothesis, 160)}"
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


def _check_llm_summary(text: str | None, known: set[str]) -> str | None:
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


def condense(
    path: Path | str,
    records: Sequence[ExperimentRecord],
    summarizer: Callable[[str], str | None] | None = None,
    every: int = 1,
    force: bool = False,
) -> bool:
    """Rewrite the Summary section from `records` when `every` new verdicts arrived since the last
    rewrite (or when forced). The Log and anything else in the file stay byte-for-byte. Returns
    whether it rewrote the summary."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else SKELETON
    judged = [r for r in records if r.kind == "experiment" and r.verdict is not None]
    span = _section_span(text, SUMMARY)
    if span is not None and not force:
        m = SUMMARY_MARK.search(text[span[0] : span[1]])
        if m and len(judged) - int(m.group(1)) < every:
            return False

    body = summarize(judged)
    note = "deterministic summary"
    if summarizer is not None:
        try:
            answer = summarizer(_summary_prompt(body, judged))
            problem = _check_llm_summary(answer, {r.id for r in judged})
        except Exception as e:  # the LLM is optional; never let it break the loop
            answer, problem = None, f"{type(e).__name__}: {e}"
        if problem is None:
            body, note = answer.strip() + "\n", "written by the LLM summarizer"
        else:
            note = f"deterministic summary (LLM summary rejected: {_one_line(problem, 200)})"
    section = (
        f"{SUMMARY}\n\n<!-- autoresearch-ci:summary verdicts={len(judged)} ({note}) -->\n\n{body.strip()}\n"
    )

    if span is None:  # put it first: after the title and intro, before any other section
        first = re.search(r"^## ", text, flags=re.MULTILINE)
        at = first.start() if first else len(text)
        text = text[:at].rstrip("\n") + "\n\n" + section + ("\n" + text[at:] if first else "")
    else:
        start, end = span
        text = text[:start] + section + ("\n" + text[end:] if end < len(text) else "")
    _atomic_write(path, text)
    return True


# ----------------------------------------------------------------------------------------------
# markdown for people


def render_results_table(records: Iterable[ExperimentRecord], limit: int | None = None) -> str:
    """A markdown table of experiments, newest last (the last `limit` when given)."""
    rows = []
    exps = [r for r in records if r.kind == "experiment"]
    for r in exps[-limit:] if limit else exps:
        v = r.verdict
        pr = (
            f"[#{r.pr_number}]({r.pr_url})"
            if r.pr_url and r.pr_number
            else (f"[PR]({r.pr_url})" if r.pr_url else "")
        )
        rows.append(
            [
                f"`{r.id}`",
                v.decision if v else "pending",
                _f(v.candidate_mean) if v else "—",
                _f(v.delta, signed=True) if v else "—",
                _f(v.threshold) if v else "—",
                _one_line(r.hypothesis, 70).replace("|", "\\|"),
                pr,
            ]
        )
    if not rows:
        return "_No experiments yet._\n"
    return (
        tabulate(
            rows,
            headers=["id", "verdict", "val_bpb", "Δ", "threshold", "hypothesis", "PR"],
            tablefmt="github",
            disable_numparse=True,
        )
        + "\n"
    )


def _fence(text: str) -> str:
    return "```\n" + text.replace("```", "ʼʼʼ").rstrip() + "\n```"


def render_pr_comment(record: ExperimentRecord) -> str:
    """The results comment on a candidate's PR (the marker lets the forge update it in place)."""
    r, v = record, record.verdict
    decision = v.decision if v else "pending"
    out = [PR_COMMENT_MARK, f"## autoresearch-ci: **{decision}**", ""]
    out.append(f"**Hypothesis.** {_one_line(r.hypothesis) or '—'}")
    if v:
        out += ["", f"**Verdict.** {_one_line(v.reason, 1000)}"]
    b = r.baseline
    if v and v.delta is not None:
        out += [
            "",
            tabulate(
                [
                    ["candidate", _f(v.candidate_mean), ", ".join(_f(x) for x in r.ok_values())],
                    [
                        f"baseline `{b.commit[:10]}`" if b else "baseline",
                        _f(v.baseline_mean),
                        ", ".join(_f(x) for x in b.values) if b else "",
                    ],
                    [
                        "Δ (negative is better)",
                        _f(v.delta, signed=True),
                        f"a keep needed < −{_f(v.threshold)}",
                    ],
                    ["noise σ (pooled baselines)", _f(v.noise), ""],
                ],
                headers=["", "val_bpb", "runs / note"],
                tablefmt="github",
                disable_numparse=True,
            ),
        ]
    if r.runs:
        rows = []
        for o in r.runs:
            m = o.metrics
            rows.append(
                [
                    o.request.role,
                    str(o.request.seed),
                    m.status if m else "infra_error",
                    _f(m.val_bpb) if m else "—",
                    f"{m.training_seconds:.1f}" if m and m.training_seconds is not None else "—",
                    f"{m.peak_memory_mb / 1024:.1f}" if m and m.peak_memory_mb else "—",
                    f"{m.mfu_percent:.1f}" if m and m.mfu_percent is not None else "—",
                    _one_line(m.device) if m and m.device else "—",
                ]
            )
        out += [
            "",
            "**Runs.**",
            "",
            tabulate(
                rows,
                headers=["role", "seed", "status", "val_bpb", "train s", "memory GB", "MFU %", "device"],
                tablefmt="github",
                disable_numparse=True,
            ),
        ]
        failed = [o for o in r.runs if o.metrics is None or o.metrics.status != "ok"]
        for o in failed[:2]:
            detail = (o.metrics.error if o.metrics and o.metrics.error else "") or o.infra_error or ""
            tail = "\n".join(x for x in [detail, o.log_tail[-2000:]] if x)
            if tail:
                out += [
                    "",
                    f"<details><summary>{o.request.role} seed {o.request.seed}: output tail</summary>",
                    "",
                    _fence(tail),
                    "",
                    "</details>",
                ]
    facts = [f"ledger `{r.id}`", f"preset `{r.preset}`", f"runner `{r.runner}`"]
    if r.harness_sha256:
        facts.append(f"harness `{r.harness_sha256[:12]}`")
    if r.gpu_seconds:
        facts.append(f"device time {r.gpu_seconds:,.0f} s")
    if r.llm.total_tokens():
        facts.append(f"LLM tokens {r.llm.total_tokens():,}")
    if r.cost_usd:
        facts.append(f"cost ${r.cost_usd:,.2f}")
    if r.actions_run_url:
        facts.append(f"[Actions run]({r.actions_run_url})")
    out += ["", " · ".join(facts), ""]
    return "\n".join(out)
