"""What a candidate's PR says: its title and body, the results comment, the status lines, and the
commit messages the judge writes (the merge of a keep, the ledger commit of a tick).

The results comment starts with COMMENT_MARKER, the one marker the GitHub forge finds its comment by
(to edit it in place when a judge runs again); the local forge keeps the same text in a git note.
"""

from __future__ import annotations

from tabulate import tabulate

from autoresearch_ci.forge.base import STATUS_DESCRIPTION_LIMIT, StatusState
from autoresearch_ci.records import ExperimentRecord, Proposal, Verdict
from autoresearch_ci.report.text import MISSING, fence, num, one_line

COMMENT_MARKER = "<!-- autoresearch-ci:results -->"
EXPERIMENT_MARKER = "<!-- autoresearch-ci:experiment {id} -->"
PR_BODY_LIMIT = 60_000  # GitHub refuses bodies over 65,536 characters
DIFF_IN_BODY_LIMIT = 20_000
TITLE_PREFIX = "autoresearch: "
QUEUED = "queued for training"
REJECTED = "rejected by the guard"


def title(proposal: Proposal) -> str:
    text = proposal.hypothesis.strip().splitlines()[0] if proposal.hypothesis.strip() else "experiment"
    return f"{TITLE_PREFIX}{text[:90]}"


def body(experiment_id: str, proposal: Proposal, preset: str) -> str:
    return (
        f"**Hypothesis.** {proposal.hypothesis}\n\n"
        f"Proposed by `{proposal.proposer}`, experiment `{experiment_id}`, preset `{preset}`.\n\n"
        "The locked harness will train this candidate for the preset's fixed budget and the judge will "
        "merge it only if it beats the baseline by more than the measured noise. Results follow in a comment."
    )


def github_body(experiment_id: str, body: str, base_commit: str, commit: str, stat: str, diff: str) -> str:
    """The PR's body on GitHub: the body above, then the experiment, the diff stat and the diff."""
    if len(diff) > DIFF_IN_BODY_LIMIT:
        diff = diff[:DIFF_IN_BODY_LIMIT] + f"\n… ({len(diff) - DIFF_IN_BODY_LIMIT} more characters)\n"
    text = (
        f"{EXPERIMENT_MARKER.format(id=experiment_id)}\n{body.strip()}\n\n"
        f"**Experiment** `{experiment_id}` · base `{base_commit[:12]}` · candidate `{commit[:12]}`\n\n"
        f"```\n{stat}\n```\n\n<details><summary>Diff</summary>\n\n```diff\n{diff}```\n\n</details>\n"
    )
    return text[:PR_BODY_LIMIT]


def status(verdict: Verdict) -> tuple[StatusState, str]:
    """The commit status a verdict sets: an infrastructure failure is an error (not the candidate's)."""
    v = verdict
    if v.decision == "keep":
        state, text = "success", f"keep: {v.reason}"
    elif v.decision == "infra-error":
        state, text = "error", f"infrastructure: {v.reason}"
    else:
        state, text = "failure", f"{v.decision}: {v.reason}"
    return state, text[:STATUS_DESCRIPTION_LIMIT]


def merge_message(record: ExperimentRecord) -> str:
    return f"{TITLE_PREFIX}{record.hypothesis.strip()[:72]} ({record.id})"


def ledger_message(tick_id: str, records: int) -> str:
    return f"{TITLE_PREFIX}ledger for tick {tick_id} ({records} record(s))"


def render_pr_comment(record: ExperimentRecord) -> str:
    """The results comment on a candidate's PR (the marker lets the forge update it in place)."""
    r, v = record, record.verdict
    decision = v.decision if v else "pending"
    out = [COMMENT_MARKER, f"## autoresearch-ci: **{decision}**", ""]
    out.append(f"**Hypothesis.** {one_line(r.hypothesis) or MISSING}")
    if v:
        out += ["", f"**Verdict.** {one_line(v.reason, 1000)}"]
    if r.held:
        out += ["", f"**Not merged.** {one_line(r.held, 1000)}"]
    b = r.baseline
    if v and v.delta is not None and v.paired:
        out += ["", *_paired_table(r)]
    elif v and v.delta is not None:
        out += [
            "",
            tabulate(
                [
                    ["candidate", num(v.candidate_mean), ", ".join(num(x) for x in r.ok_values())],
                    [
                        f"baseline `{b.commit[:10]}`" if b else "baseline",
                        num(v.baseline_mean),
                        ", ".join(num(x) for x in b.values) if b else "",
                    ],
                    [
                        "Δ (negative is better)",
                        num(v.delta, signed=True),
                        f"a keep needed < −{num(v.threshold)}",
                    ],
                    ["noise σ (pooled baselines)", num(v.noise), ""],
                ],
                headers=["", "val_bpb", "runs / note"],
                tablefmt="github",
                disable_numparse=True,
            ),
        ]
    if r.runs:
        out += ["", "**Runs.**", "", _runs_table(r), *_failure_tails(r)]
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


def _paired_table(r: ExperimentRecord) -> list[str]:
    """The candidate and the base seed by seed, the mean difference with its interval, the bar."""
    v, b = r.verdict, r.baseline
    base = b.by_seed() if b else {}
    cand = {o.request.seed: o.metrics.val_bpb for o in r.runs if o.metrics and o.metrics.val_bpb is not None}
    rows = [
        [str(s), num(cand.get(s)), num(base.get(s)), num(d, signed=True)]
        for s, d in zip(v.seeds, v.paired_deltas, strict=False)
    ]
    ci = (
        f"[{num(v.delta_low, signed=True)}, {num(v.delta_high, signed=True)}]"
        if v.delta_low is not None
        else ""
    )
    rows.append(
        [
            f"mean ({v.pairs} pair{'' if v.pairs == 1 else 's'})",
            num(v.candidate_mean),
            num(v.baseline_mean),
            f"**{num(v.delta, signed=True)}** {ci}",
        ]
    )
    table = tabulate(
        rows,
        headers=[
            "seed",
            "candidate",
            f"baseline `{b.commit[:10]}`" if b else "baseline",
            "Δ (lower is better)",
        ],
        tablefmt="github",
        disable_numparse=True,
    )
    bar = (
        f"a keep needed a mean Δ below −{num(v.threshold)}"
        if v.threshold is not None
        else "no bar yet (the noise was not known)"
    )
    noise = (
        f"σ_d (std of one paired difference) {num(v.noise)}, {v.noise_dof} dof" if v.noise is not None else ""
    )
    return [
        table,
        "",
        f"Paired on the same seeds; {ci and '95% interval of the mean in brackets; '}{bar}"
        + (f"; {noise}." if noise else "."),
    ]


def _runs_table(r: ExperimentRecord) -> str:
    rows = []
    for o in r.runs:
        m = o.metrics
        rows.append(
            [
                o.request.role,
                str(o.request.seed),
                m.status if m else "infra_error",
                num(m.val_bpb) if m else MISSING,
                f"{m.training_seconds:.1f}" if m and m.training_seconds is not None else MISSING,
                f"{m.peak_memory_mb / 1024:.1f}" if m and m.peak_memory_mb else MISSING,
                f"{m.mfu_percent:.1f}" if m and m.mfu_percent is not None else MISSING,
                one_line(m.device) if m and m.device else MISSING,
            ]
        )
    return tabulate(
        rows,
        headers=["role", "seed", "status", "val_bpb", "train s", "memory GB", "MFU %", "device"],
        tablefmt="github",
        disable_numparse=True,
    )


def _failure_tails(r: ExperimentRecord) -> list[str]:
    """The output tail of the first two runs that failed, folded."""
    out: list[str] = []
    failed = [o for o in r.runs if o.metrics is None or o.metrics.status != "ok"]
    for o in failed[:2]:
        detail = (o.metrics.error if o.metrics and o.metrics.error else "") or o.infra_error or ""
        tail = "\n".join(x for x in [detail, o.log_tail[-2000:]] if x)
        if tail:
            out += [
                "",
                f"<details><summary>{o.request.role} seed {o.request.seed}: output tail</summary>",
                "",
                fence(tail),
                "",
                "</details>",
            ]
    return out
