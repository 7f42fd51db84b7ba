"""The tables and lines a person reads about many experiments at once.

render_results_table   markdown: the judge job's summary and stdout
status_table           terminal: `autoresearch-ci status` and the end of `loop`
loop_line              terminal: one line per record as `loop` writes it
*_summary              markdown: each CI job's step summary
results_tsv            karpathy's results.tsv, plus our columns (`ledger export`, the ledger commit)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from tabulate import tabulate

from autoresearch_ci.records import ExperimentRecord, RunOutcome
from autoresearch_ci.report.text import MISSING, mean_ok, num, one_line, paired_delta

if TYPE_CHECKING:
    from autoresearch_ci.budget import BudgetDecision
    from autoresearch_ci.steps.state import TickState

# karpathy's results.tsv columns, then ours.
TSV_COLUMNS = [
    "commit",
    "val_bpb",
    "memory_gb",
    "status",
    "description",
    "id",
    "decision",
    "preset",
    "runner",
    "device",
    "delta",
    "threshold",
    "pr_url",
    "delta_low",  # paired records: the 95% interval of the mean paired difference, and the pairs
    "delta_high",
    "pairs",
]
# karpathy's status has three values; ours has more. The exact decision is in its own column.
TSV_STATUS = {
    "keep": "keep",
    "discard": "discard",
    "invalid": "discard",
    "crash": "crash",
    "infra-error": "crash",
    "proposal-failed": "crash",
}


def _pr_link(r: ExperimentRecord) -> str:
    if r.pr_url and r.pr_number:
        return f"[#{r.pr_number}]({r.pr_url})"
    return f"[PR]({r.pr_url})" if r.pr_url else ""


def render_results_table(records: Iterable[ExperimentRecord], limit: int | None = None) -> str:
    """A markdown table of experiments, newest last (the last `limit` when given)."""
    rows = []
    exps = [r for r in records if r.kind == "experiment"]
    for r in exps[-limit:] if limit else exps:
        v = r.verdict
        rows.append(
            [
                f"`{r.id}`",
                v.decision if v else "pending",
                num(v.candidate_mean) if v else MISSING,
                paired_delta(v, 6),
                num(v.threshold) if v else MISSING,
                one_line(r.hypothesis, 70).replace("|", "\\|"),
                _pr_link(r),
            ]
        )
    if not rows:
        return "_No experiments yet._\n"
    return (
        tabulate(
            rows,
            headers=["id", "verdict", "val_bpb", "Δ [95% interval]", "threshold", "hypothesis", "PR"],
            tablefmt="github",
            disable_numparse=True,
        )
        + "\n"
    )


def status_table(experiments: Sequence[ExperimentRecord], best: tuple[float, ExperimentRecord] | None) -> str:
    """A terminal-width table of experiments and the best kept one (not wrapped, not markdown)."""
    rows = []
    for r in experiments:
        v = r.verdict
        rows.append(
            [
                r.id,
                v.decision if v else "?",
                mean_ok(r),
                f"{v.delta:+.4f}" if v and v.delta is not None else "-",
                _interval(v),
                str(v.pairs) if v and v.pairs is not None else "-",
                f"{v.threshold:.4f}" if v and v.threshold is not None else "-",
                (r.hypothesis or (v.reason if v else ""))[:48],
            ]
        )
    headers = ["experiment", "verdict", "val_bpb", "delta", "95% interval", "pairs", "bar", "hypothesis"]
    lines = [tabulate(rows, headers=headers, disable_numparse=True) if rows else "no experiments yet"]
    if best is not None:
        value, rec = best
        lines.append(f"best so far: val_bpb {value:.4f} ({rec.id}: {rec.hypothesis[:80]})")
    else:
        lines.append("no kept experiment yet")
    return "\n".join(lines)


def _interval(v) -> str:
    if v is None or v.delta_low is None or v.delta_high is None:
        return "-"
    return f"[{v.delta_low:+.4f}, {v.delta_high:+.4f}]"


def loop_line(rec: ExperimentRecord) -> str:
    """One line for a record the loop just wrote: a verdict, or a baseline's values."""
    if rec.kind != "experiment":
        return (
            f"baseline {rec.parent_commit[:10]}: "
            + ", ".join(f"{x:.4f}" for x in rec.ok_values())
            + (f"  ({rec.hypothesis})" if rec.id.endswith("-base") else "")
        )
    v = rec.verdict
    if v is not None and v.paired and v.delta is not None:
        bar = f"  bar {v.threshold:.4f}" if v.threshold is not None else ""
        return (
            f"{rec.id}  {v.decision:<15} val_bpb {mean_ok(rec)}  {paired_delta(v)}{bar}  "
            f"{rec.hypothesis[:70]}"
        )
    delta = f"{v.delta:+.4f}" if v and v.delta is not None else "-"
    thr = f"±{v.threshold:.4f}" if v and v.threshold is not None else ""
    return (
        f"{rec.id}  {v.decision if v else '?':<15} val_bpb {mean_ok(rec)}  delta {delta} {thr}  "
        f"{rec.hypothesis[:70]}"
    )


# ----------------------------------------------------------------------------------------------
# job summaries


def budget_summary(decision: BudgetDecision) -> str:
    return f"### Budget check\n\n{decision.reason}\n\n{decision.table}"


def _guard_state(c) -> str:
    return "rejected" if not c.guard_ok else "guard command pending" if c.guard_pending else "ok"


def proposals_summary(state: TickState) -> str:
    lines = [
        f"- `{c.experiment_id}` {_guard_state(c)}"
        + (f" (trained again: left by tick {c.carried_from})" if c.carried_from else "")
        + f": {c.proposal.hypothesis or c.proposal.error}"
        + (f" ([PR]({c.candidate.pr_url}))" if c.candidate and c.candidate.pr_url else "")
        for c in state.candidates
    ]
    return f"### Proposals for tick {state.tick_id}\n\nbase `{state.base_commit[:10]}`\n\n" + "\n".join(lines)


def training_summary(outcomes: Iterable[RunOutcome]) -> str:
    rows = [
        f"| {o.request.experiment_id} | {o.request.role} | {o.request.seed} | "
        f"{o.metrics.status if o.metrics else 'infra: ' + (o.infra_error or '')[:60]} | "
        f"{(o.metrics.val_bpb if o.metrics and o.metrics.val_bpb is not None else float('nan')):.4f} |"
        for o in outcomes
    ]
    return (
        "### Training runs\n\n| experiment | role | seed | status | val_bpb |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
    )


def verdicts_summary(tick_id: str, table: str) -> str:
    return f"### Verdicts for tick {tick_id}\n\n{table}"


def settled_summary(settled) -> str:
    """What settle did with earlier ticks' candidates left without a result (steps/settle.Settled)."""
    lines = [
        f"- `{c.experiment_id}` trained again in this tick"
        + (f" ([PR]({c.candidate.pr_url}))" if c.candidate and c.candidate.pr_url else "")
        for c in settled.carried
    ]
    lines += [f"- `{eid}` closed without a result (see its PR and ledger record)" for eid in settled.closed]
    return "### Earlier ticks' candidates\n\n" + ("\n".join(lines) if lines else "none left without a result")


def guard_summary(results) -> str:
    """The guard command's verdicts (steps/state.GuardResults)."""
    lines = [
        f"- `{eid}`: {'passed' if g.ok else 'failed'}" + ("" if g.ok else f"\n\n```\n{g.tail[-1500:]}\n```")
        for eid, g in results.results.items()
    ]
    return f"### Guard command, tick {results.tick_id}\n\n" + ("\n".join(lines) or "nothing to check")


# ----------------------------------------------------------------------------------------------
# results.tsv


def _tsv_row(r: ExperimentRecord) -> list[str]:
    v = r.verdict
    ok_mem = [o.metrics.peak_memory_mb for o in r.runs if o.metrics is not None and o.metrics.peak_memory_mb]
    kept_or_discarded = v.decision in ("keep", "discard") and v.candidate_mean is not None
    val = v.candidate_mean if kept_or_discarded else 0.0  # karpathy writes 0.000000 for a crash
    mem = max(ok_mem) / 1024 if ok_mem and kept_or_discarded else 0.0
    desc = " ".join((r.hypothesis or "").split())  # no tabs or newlines inside a cell
    return [
        (r.candidate_commit or "")[:7],
        f"{val:.6f}",
        f"{mem:.1f}",
        TSV_STATUS[v.decision],
        desc,
        r.id,
        v.decision,
        r.preset,
        r.runner,
        r.device or "",
        "" if v.delta is None else f"{v.delta:+.6f}",
        "" if v.threshold is None else f"{v.threshold:.6f}",
        r.pr_url or "",
        "" if v.delta_low is None else f"{v.delta_low:+.6f}",
        "" if v.delta_high is None else f"{v.delta_high:+.6f}",
        "" if v.pairs is None else str(v.pairs),
    ]


def results_tsv(records: Iterable[ExperimentRecord]) -> str:
    """karpathy's results.tsv (commit, val_bpb, memory_gb, status, description) plus our columns,
    one row per judged experiment."""
    rows = [TSV_COLUMNS] + [_tsv_row(r) for r in records if r.kind == "experiment" and r.verdict is not None]
    return "".join("\t".join(row) + "\n" for row in rows)
