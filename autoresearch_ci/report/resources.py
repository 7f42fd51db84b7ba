"""resources.md: what the loop has learned, every claim tied to the experiments that show it.

The file has two parts the loop maintains:

- "## Log": one entry per verdict (hypothesis, result: the paired delta with its interval against
  the bar, verdict, ledger id, commit and PR). It only grows; an entry already there is not written again.
- "## Summary": rewritten by `condense` every few verdicts into What works / What does not /
  Open ideas, each line citing ledger ids (see summary.py: offline, or by an LLM summarizer with a
  deterministic fallback).

Anything else in the file (a human's notes above, other sections) is left as it is.

Text in, text out: `add_entry` and `condense_text` take the file's current text (None: no file yet)
and return the new one, or None when nothing changes; the judge step hands the result to the forge.
`append_entry` and `condense` do the same on a path, writing atomically.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from autoresearch_ci.files import write_atomically
from autoresearch_ci.records import ExperimentRecord
from autoresearch_ci.report import summary
from autoresearch_ci.report.text import num, one_line, paired_delta

SUMMARY = "## Summary"
LOG = "## Log"
SUMMARY_MARK = re.compile(r"<!-- autoresearch-ci:summary verdicts=(\d+)")
ENTRY_MARK = "<!-- ledger:{id} -->"

SKELETON = f"""# Resources

What the research loop has learned about `train.py`. Every claim cites the ledger experiments
(`ledger/experiments.jsonl`) that show it. The Summary is rewritten from the ledger every few
verdicts; the Log only grows.

{SUMMARY}

_No verdicts yet._

{LOG}
"""

Summarizer = Callable[[str], str | None]


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
        head += f" · val_bpb {num(v.candidate_mean)}"
    lines = [head, ENTRY_MARK.format(id=r.id), "", f"- **Hypothesis:** {one_line(r.hypothesis) or '—'}"]
    if r.edit:
        lines.append(
            f"- **Edit:** `{one_line(str(r.edit.get('name')))}` "
            f"{one_line(str(r.edit.get('old')))} → {one_line(str(r.edit.get('new')))}"
        )
    if v and v.delta is not None and v.paired:
        noise = f", σ_d {num(v.noise)}" if v.noise is not None else ""
        bar = f"a keep needed < −{num(v.threshold)}" if v.threshold is not None else "no bar yet"
        lines.append(
            f"- **Result:** {paired_delta(v, 6)} on seeds {', '.join(map(str, v.seeds))}: val_bpb "
            f"{num(v.candidate_mean)} vs the base's {num(v.baseline_mean)} ({bar}{noise})"
        )
    elif v and v.delta is not None:
        noise = f", noise σ {num(v.noise)}" if v.noise is not None else ""
        lines.append(
            f"- **Result:** val_bpb {num(v.candidate_mean)} vs baseline {num(v.baseline_mean)}: "
            f"Δ {num(v.delta, signed=True)} (a keep needed < −{num(v.threshold)}{noise})"
        )
    if v:
        lines.append(
            f"- **Verdict:** {v.decision}{' (confirmed by a second run)' if v.confirmed else ''}: "
            f"{one_line(v.reason, 600)}"
        )
    evidence = [
        f"ledger `{r.id}`",
        f"{r.preset}/{r.runner}" + (f" on {one_line(r.device)}" if r.device else ""),
    ]
    if r.candidate_commit:
        evidence.append(f"commit `{r.candidate_commit[:10]}`")
    if r.merged_commit:
        evidence.append(f"merged as `{r.merged_commit[:10]}`")
    if r.pr_url:
        evidence.append(f"[PR #{r.pr_number}]({r.pr_url})" if r.pr_number else f"[PR]({r.pr_url})")
    elif r.archived_ref:
        evidence.append(f"kept at `{one_line(r.archived_ref)}`")
    lines.append(f"- **Evidence:** {' · '.join(evidence)}")
    return "\n".join(lines) + "\n"


def add_entry(text: str | None, record: ExperimentRecord) -> str | None:
    """The text with the record's entry at the end of the Log section; None when it is already
    there (or the record is a baseline measurement, which is no learning)."""
    if record.kind != "experiment":
        return None
    text = SKELETON if text is None else text
    if ENTRY_MARK.format(id=record.id) in text:
        return None
    span = _section_span(text, LOG)
    if span is None:
        text = text.rstrip("\n") + f"\n\n{LOG}\n"
        span = _section_span(text, LOG)
    _, end = span
    before, after = text[:end].rstrip("\n") + "\n\n", text[end:]
    return before + render_entry(record) + ("\n" + after if after else "")


def replace_entry(text: str | None, record: ExperimentRecord) -> str | None:
    """The text with the record's entry rewritten in place (or added, when it has none): for a
    candidate an earlier tick recorded as an infrastructure failure and a later one judged
    (steps/settle.py). None when nothing changes."""
    if text is None or ENTRY_MARK.format(id=record.id) not in text:
        return add_entry(text, record)
    head = re.search(rf"^### {re.escape(record.id)} ·.*$", text, flags=re.MULTILINE)
    if head is None:
        return None
    nxt = re.search(r"^##", text[head.end() :], flags=re.MULTILINE)
    end = head.end() + nxt.start() if nxt else len(text)
    new = text[: head.start()] + render_entry(record) + ("\n" + text[end:] if nxt else "")
    return None if new == text else new


# ----------------------------------------------------------------------------------------------
# the summary


def condense_text(
    text: str | None,
    records: Sequence[ExperimentRecord],
    summarizer: Summarizer | None = None,
    every: int = 1,
    force: bool = False,
) -> str | None:
    """The text with its Summary section rewritten from `records`, when `every` new verdicts arrived
    since the last rewrite (or when forced); None when it is not due. The Log and anything else in
    the file stay byte-for-byte."""
    text = SKELETON if text is None else text
    judged = [r for r in records if r.kind == "experiment" and r.verdict is not None]
    span = _section_span(text, SUMMARY)
    if span is not None and not force:
        m = SUMMARY_MARK.search(text[span[0] : span[1]])
        if m and len(judged) - int(m.group(1)) < every:
            return None

    body = summary.summarize(judged)
    note = "deterministic summary"
    if summarizer is not None:
        try:
            answer = summarizer(summary.llm_prompt(body, judged))
            problem = summary.llm_problem(answer, {r.id for r in judged})
        except Exception as e:  # the LLM is optional; never let it break the loop
            answer, problem = None, f"{type(e).__name__}: {e}"
        if problem is None:
            body, note = answer.strip() + "\n", "written by the LLM summarizer"
        else:
            note = f"deterministic summary (LLM summary rejected: {one_line(problem, 200)})"
    section = (
        f"{SUMMARY}\n\n<!-- autoresearch-ci:summary verdicts={len(judged)} ({note}) -->\n\n{body.strip()}\n"
    )

    if span is None:  # put it first: after the title and intro, before any other section
        first = re.search(r"^## ", text, flags=re.MULTILINE)
        at = first.start() if first else len(text)
        return text[:at].rstrip("\n") + "\n\n" + section + ("\n" + text[at:] if first else "")
    start, end = span
    return text[:start] + section + ("\n" + text[end:] if end < len(text) else "")


# ----------------------------------------------------------------------------------------------
# the same, on a file


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


def append_entry(path: Path | str, record: ExperimentRecord) -> bool:
    """add_entry on a file; False when nothing was added."""
    path = Path(path)
    text = add_entry(_read(path), record)
    if text is not None:
        write_atomically(path, text)
    return text is not None


def condense(
    path: Path | str,
    records: Sequence[ExperimentRecord],
    summarizer: Summarizer | None = None,
    every: int = 1,
    force: bool = False,
) -> bool:
    """condense_text on a file; whether it rewrote the summary."""
    path = Path(path)
    text = condense_text(_read(path), records, summarizer, every, force)
    if text is not None:
        write_atomically(path, text)
    return text is not None
