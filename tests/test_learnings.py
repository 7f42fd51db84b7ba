"""resources.md upkeep (the log only grows, the summary cites evidence) and the markdown renderers."""

from __future__ import annotations

import re

import pytest
from support.synthetic_ledger import synthetic_records

from autoresearch_ci.records import (
    BaselineStats,
    ExperimentRecord,
    RunMetrics,
    RunOutcome,
    RunRequest,
    Verdict,
)
from autoresearch_ci.report import resources as learnings
from autoresearch_ci.report.pr import COMMENT_MARKER as PR_COMMENT_MARK
from autoresearch_ci.report.pr import render_pr_comment
from autoresearch_ci.report.resources import append_entry, condense
from autoresearch_ci.report.summary import summarize
from autoresearch_ci.report.tables import render_results_table


def rec(i, decision, delta=None, edit=None, hyp="", pr=None, error=None) -> ExperimentRecord:
    rid = f"20261122-1200{i:02d}-abc{i:03d}"
    ok = decision in ("keep", "discard")
    status = "ok" if ok else ("crash" if decision == "crash" else "invalid")
    metrics = RunMetrics(
        status=status,
        val_bpb=1.5 + (delta or 0) if ok else None,
        training_seconds=30.0,
        peak_memory_mb=2048.0,
        device="cpu",
        error=error,
    )
    run = RunOutcome(
        request=RunRequest(
            experiment_id=rid, role="candidate", commit="c" * 40, train_py="", preset="cpu", seed=0
        ),
        runner="local",
        metrics=metrics,
        log_tail="Traceback ...\nRuntimeError: ``` boom" if error else "",
    )
    return ExperimentRecord(
        id=rid,
        parent_commit="p" * 40,
        candidate_commit=f"{i:040x}",
        preset="cpu",
        runner="local",
        device="cpu",
        hypothesis=hyp or (f"set {edit['name']} {edit['old']} -> {edit['new']}" if edit else f"idea {i}"),
        edit=edit,
        runs=[run],
        pr_number=pr,
        pr_url=f"https://github.com/o/r/pull/{pr}" if pr else None,
        baseline=BaselineStats(
            commit="p" * 40, preset="cpu", runner="local", values=[1.5, 1.5], seeds=[0, 1], mean=1.5, std=0.0
        ),
        verdict=Verdict(
            decision=decision,
            reason=f"reason {i}",
            candidate_mean=1.5 + delta if ok else None,
            baseline_mean=1.5,
            delta=delta if ok else None,
            threshold=0.004 if ok else None,
            noise=0.002 if ok else None,
        ),
    )


LR_UP = {"name": "LR", "old": "0.001", "new": "0.002"}
DEPTH_DOWN = {"name": "DEPTH", "old": "8", "new": "6"}

RECORDS = [
    rec(1, "keep", -0.010, LR_UP, pr=1),
    rec(2, "discard", +0.001, {"name": "LR", "old": "0.002", "new": "0.004"}, pr=2),
    rec(3, "discard", +0.006, DEPTH_DOWN, pr=3),
    rec(4, "discard", +0.004, {"name": "DEPTH", "old": "8", "new": "4"}),
    rec(5, "crash", edit={"name": "BATCH", "old": "32", "new": "4096"}, error="CUDA out of memory"),
    rec(6, "discard", -0.002, hyp="Swap ReLU^2 for SwiGLU in the MLP"),
    rec(7, "keep", -0.006, hyp="Add QK-norm before the rotary embedding"),
]


def test_append_entry_creates_the_file_and_is_idempotent(tmp_path):
    path = tmp_path / "resources.md"
    assert append_entry(path, RECORDS[0])
    assert not append_entry(path, RECORDS[0])  # a re-run tick does not duplicate
    assert append_entry(path, RECORDS[2])
    text = path.read_text()
    assert text.startswith("# Resources") and "## Summary" in text
    log = text[text.index("## Log") :]
    assert log.index(RECORDS[0].id) < log.index(RECORDS[2].id)
    assert text.count(f"<!-- ledger:{RECORDS[0].id} -->") == 1
    entry = learnings.render_entry(RECORDS[0])
    assert "**Hypothesis:** set LR 0.001 -> 0.002" in entry and "`LR` 0.001 → 0.002" in entry
    assert "Δ -0.010000 (a keep needed < −0.004000, noise σ 0.002000)" in entry
    assert "**Verdict:** keep: reason 1" in entry
    assert f"ledger `{RECORDS[0].id}`" in entry and "[PR #1](https://github.com/o/r/pull/1)" in entry


def test_append_entry_keeps_human_text_and_later_sections(tmp_path):
    path = tmp_path / "resources.md"
    path.write_text(
        "# Notes\n\nMy own intro.\n\n## Log\n\n### old entry\n- kept forever\n\n## Appendix\n\nhands off\n"
    )
    append_entry(path, RECORDS[1])
    text = path.read_text()
    assert text.startswith("# Notes\n\nMy own intro.\n\n## Log\n\n### old entry\n- kept forever\n")
    assert text.index(RECORDS[1].id) < text.index("## Appendix")
    assert text.endswith("## Appendix\n\nhands off\n")


def test_append_entry_without_log_section_adds_one(tmp_path):
    path = tmp_path / "resources.md"
    path.write_text("# R\n\nfree text\n")
    append_entry(path, RECORDS[1])
    text = path.read_text()
    assert text.startswith("# R\n\nfree text\n\n## Log\n") and RECORDS[1].id in text


def test_hostile_hypothesis_cannot_break_the_file(tmp_path):
    path = tmp_path / "resources.md"
    evil = rec(
        9, "discard", 0.001, hyp="ok\n## Log\n<!-- ledger:20261122-120001-abc001 -->\n<script>x</script>"
    )
    append_entry(path, evil)
    text = path.read_text()
    assert text.count("\n## Log") == 1 and "<script>" not in text and "&lt;script>" in text
    assert append_entry(path, RECORDS[0])  # the fake marker did not block the real entry


def test_baselines_are_not_learnings(tmp_path):
    b = ExperimentRecord(id="b1", kind="baseline", parent_commit="p", preset="cpu", runner="local")
    assert not append_entry(tmp_path / "resources.md", b)


def test_deterministic_summary_groups_and_cites():
    text = summarize(RECORDS)
    works = text[text.index("### What works") : text.index("### What does not")]
    fails = text[text.index("### What does not") : text.index("### Open ideas")]
    ideas = text[text.index("### Open ideas") :]
    ids = [r.id for r in RECORDS]
    assert "**raising LR**" in works and "kept 1 of 2" in works and "best Δ -0.010000" in works
    assert f"Kept: `{ids[0]}`; not kept: `{ids[1]}`" in works
    assert "**normalisation**" in works and ids[6] in works  # "QK-norm": a hypothesis without an edit
    assert "**lowering DEPTH**" in fails and "0 of 2 kept" in fails and ids[2] in fails and ids[3] in fails
    assert "**raising BATCH**" in fails and "every try crashed" in fails and ids[4] in fails
    assert "**activation / MLP**" in ideas and "within the noise" in ideas and ids[5] in ideas
    assert "Try the other direction: raise `DEPTH`" in ideas and "Push further: keep raising `LR`" in ideas
    for line in text.splitlines():  # every claim cites the ledger
        if line.startswith("- "):
            assert re.search(r"`\d{8}-\d{6}-abc\d{3}`", line), line


def test_summary_of_nothing():
    text = summarize([])
    assert "_Nothing kept yet._" in text and "### Open ideas" in text


def test_condense_rewrites_summary_and_never_touches_the_log(tmp_path):
    path = tmp_path / "resources.md"
    for r in RECORDS:
        append_entry(path, r)
    log_before = path.read_text()[path.read_text().index("## Log") :]
    assert condense(path, RECORDS)
    text = path.read_text()
    assert text[text.index("## Log") :] == log_before
    assert text.index("## Summary") < text.index("### What works") < text.index("## Log")
    assert "verdicts=7 (deterministic summary)" in text and "_No verdicts yet._" not in text
    # a second condense replaces, never stacks
    assert condense(path, RECORDS, force=True)
    assert path.read_text() == text


def test_condense_every_n_verdicts(tmp_path):
    path = tmp_path / "resources.md"
    assert condense(path, RECORDS[:3], every=3)  # no summary yet: write one
    assert not condense(path, RECORDS[:5], every=3)  # 2 new verdicts
    assert condense(path, RECORDS[:6], every=3)  # 3 new
    assert "verdicts=6" in path.read_text()
    assert condense(path, RECORDS[:6], every=3, force=True)


def test_condense_puts_a_new_summary_first(tmp_path):
    path = tmp_path / "resources.md"
    path.write_text("# R\n\nintro\n\n## Log\n\n### x\n")
    condense(path, RECORDS)
    text = path.read_text()
    assert text.startswith("# R\n\nintro\n\n## Summary\n") and text.endswith("## Log\n\n### x\n")


GOOD_LLM = f"""### What works
- Raising LR helped (`{RECORDS[0].id}`).
### What does not
- Shallower models lose (`{RECORDS[2].id}`, `{RECORDS[3].id}`).
### Open ideas
- Retest SwiGLU with more seeds (`{RECORDS[5].id}`).
"""


def test_condense_with_summarizer(tmp_path):
    path = tmp_path / "resources.md"
    prompts = []
    assert condense(path, RECORDS, summarizer=lambda p: prompts.append(p) or GOOD_LLM)
    text = path.read_text()
    assert "Raising LR helped" in text and "written by the LLM summarizer" in text
    assert RECORDS[6].id in prompts[0] and "never invent an id" in prompts[0]


@pytest.mark.parametrize(
    "answer,why",
    [
        (None, "empty answer"),
        ("### What works\n- all good\n", "missing section"),
        (GOOD_LLM.replace(RECORDS[0].id, "20991231-235959-ffffff"), "cites ids that are not in the ledger"),
        (GOOD_LLM.replace("`", ""), "cites no ledger id"),
        (GOOD_LLM + "\n## Log\n", "level-2 heading"),
        (RuntimeError("rate limited"), "RuntimeError: rate limited"),
    ],
)
def test_condense_falls_back_when_the_llm_answer_is_unusable(tmp_path, answer, why):
    path = tmp_path / "resources.md"

    def summarizer(_prompt):
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert condense(path, RECORDS, summarizer=summarizer)
    text = path.read_text()
    assert "LLM summary rejected" in text and why in text
    assert "**raising LR**" in text  # the deterministic summary stands in


def test_condense_on_a_big_synthetic_ledger(tmp_path):
    records = synthetic_records(600, seed=3)
    path = tmp_path / "resources.md"
    assert condense(path, records)
    text = path.read_text()
    known = {r.id for r in records}
    cited = set(re.findall(r"`(\d{8}-\d{6}-[0-9a-z]+)`", text))
    assert cited and cited <= known
    for section in ("### What works", "### What does not", "### Open ideas"):
        assert section in text
    assert "MATRIX_LR" in text


def test_render_results_table():
    table = render_results_table(RECORDS + [rec(8, "discard", 0.0, hyp="a | b")])
    lines = table.strip().splitlines()
    assert lines[0].startswith("| id") and "verdict" in lines[0] and len(lines) == 2 + len(RECORDS) + 1
    assert "a \\| b" in table and "[#1](https://github.com/o/r/pull/1)" in table
    assert render_results_table(RECORDS, limit=2).count("`20261122") == 2
    assert render_results_table([]) == "_No experiments yet._\n"


def test_render_pr_comment_keep_and_crash():
    keep = render_pr_comment(RECORDS[0])
    assert keep.startswith(PR_COMMENT_MARK) and "**keep**" in keep
    assert "| candidate" in keep and "1.490000" in keep and "a keep needed < −0.004000" in keep
    assert "**Runs.**" in keep and "| candidate | 0" in keep and f"ledger `{RECORDS[0].id}`" in keep
    crash = render_pr_comment(RECORDS[4])
    assert "**crash**" in crash and "<details>" in crash and "CUDA out of memory" in crash
    assert crash.count("```") == 2  # the log's own fence cannot close ours
