"""Prompt assembly for the LLM proposer: what Claude reads, and the one tool it must answer with.

The request is laid out for prompt caching. The prefix order is tools, system, messages, so:

1. the `submit_experiment` tool (never changes);
2. system block 1: the instructions and program.md (change only when the human edits program.md),
   cache breakpoint;
3. system block 2: resources.md and the current train.py (change when a tick merges or learns),
   cache breakpoint;
4. the user message: the recent ledger and this tick's siblings (change with every proposal),
   after the last breakpoint, so proposing a second and third candidate re-reads 1-3 from cache.
"""

from __future__ import annotations

import difflib

from autoresearch_ci.proposers.base import ProposalContext
from autoresearch_ci.records import ExperimentRecord, Proposal

TOOL_NAME = "submit_experiment"
LEDGER_LIMIT = 40  # newest experiments shown; older ones live on in resources.md
SIBLING_DIFF_LINES = 60  # per sibling: enough to see the idea, not the whole file

CACHE = {"type": "ephemeral"}

INSTRUCTIONS = """\
You are the research agent of autoresearch-ci. Each experiment you propose changes train.py, a \
single-file GPT training script. A locked harness then trains it for a fixed wall-clock budget and \
scores it by val_bpb (validation bits per byte, lower is better). The change is merged only if it beats \
the baseline by more than the measured noise.

Rules:
- Propose ONE idea per experiment, small enough that its result says something about the idea.
- Return the COMPLETE new train.py, not a diff, through the submit_experiment tool. It must be valid \
Python and must differ from the current file.
- Keep train.py's interface with the harness as it is: what it imports from the harness, the entry \
point the harness calls, and how it reports to the harness. The time budget, the data, the tokenizer \
and the evaluation belong to the harness; you cannot change them, and trying to game them gets the \
run rejected.
- No new dependencies beyond what train.py already imports.
- Learn from the ledger: do not repeat an experiment that was already tried, and build on what was kept.
- Propose something different from the siblings already proposed this tick: they will run in \
parallel with yours.
- The hypothesis is one or two sentences: what you change and why it should lower val_bpb.

The research program, written by the owner of this repository, follows.
"""

SUBMIT_TOOL = {
    "name": TOOL_NAME,
    "description": (
        "Submit one experiment: a hypothesis and the complete new train.py that tests it. "
        "Call this exactly once."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "hypothesis": {
                "type": "string",
                "description": "One or two sentences: the change, and why it should lower val_bpb.",
            },
            "train_py": {
                "type": "string",
                "description": "The complete new contents of train.py (the whole file, not a diff).",
            },
            "rationale": {
                "type": "string",
                "description": "Optional: the evidence from the ledger or resources.md that motivates it.",
            },
        },
        "required": ["hypothesis", "train_py"],
        "additionalProperties": False,
    },
    "strict": True,
}

TOOL_CHOICE = {"type": "tool", "name": TOOL_NAME}


def render_ledger(records: list[ExperimentRecord], limit: int = LEDGER_LIMIT) -> str:
    """One line per experiment, newest last: id, verdict, delta, hypothesis."""
    rows = [r for r in records if r.kind == "experiment"][-limit:]
    if not rows:
        return "(no experiments yet)"
    lines = []
    for r in rows:
        v = r.verdict
        decision = v.decision if v else "pending"
        delta = f"{v.delta:+.4f}" if v and v.delta is not None else "n/a"
        hyp = " ".join(r.hypothesis.split()) or "(no hypothesis)"
        if len(hyp) > 240:
            hyp = hyp[:237] + "..."
        lines.append(f"{r.id} | {decision} | delta {delta} | {hyp}")
    return "\n".join(lines)


def render_siblings(siblings: list[Proposal], current: str, target: str) -> str:
    """Each sibling's hypothesis and the start of its diff against the current file."""
    shown = [s for s in siblings if s.ok]
    if not shown:
        return "(none yet: you are the first proposal of this tick)"
    parts = []
    for i, s in enumerate(shown, 1):
        parts.append(f"Sibling {i}: {' '.join(s.hypothesis.split())}")
        new = s.files.get(target)
        if new is None:
            continue
        diff = list(
            difflib.unified_diff(
                current.splitlines(), new.splitlines(), f"a/{target}", f"b/{target}", n=1, lineterm=""
            )
        )
        if len(diff) > SIBLING_DIFF_LINES:
            diff = diff[:SIBLING_DIFF_LINES] + [f"... ({len(diff) - SIBLING_DIFF_LINES} more diff lines)"]
        if diff:
            parts.append("\n".join(diff))
    return "\n\n".join(parts)


def system_blocks(context: ProposalContext, target: str) -> list[dict]:
    """The stable prefix: instructions + program.md, then resources.md + the current file."""
    program = context.program_md.strip() or "(program.md is empty)"
    resources = context.resources_md.strip() or "(no learnings recorded yet)"
    return [
        {
            "type": "text",
            "text": f"{INSTRUCTIONS}\n<program.md>\n{program}\n</program.md>",
            "cache_control": CACHE,
        },
        {
            "type": "text",
            "text": (
                f"<resources.md>\n{resources}\n</resources.md>\n\n"
                f"The current {target} (the parent of your experiment, commit {context.parent_commit}):\n"
                f"<{target}>\n{context.files[target]}\n</{target}>"
            ),
            "cache_control": CACHE,
        },
    ]


def user_message(context: ProposalContext, target: str) -> dict:
    """The volatile part, after the last cache breakpoint: the ledger and this tick's siblings."""
    text = (
        "Recent experiments (id | verdict | delta val_bpb vs baseline, negative is better | hypothesis):\n"
        f"{render_ledger(context.recent)}\n\n"
        "Already proposed this tick (propose something different from these):\n"
        f"{render_siblings(context.siblings, context.files[target], target)}\n\n"
        f"Propose the next experiment: call {TOOL_NAME} with your hypothesis and the complete new {target}."
    )
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def estimate_tokens(*texts: str) -> int:
    """A deliberately generous token count (about 3 characters a token for code and prose)."""
    return sum(len(t) for t in texts) // 3 + 1
