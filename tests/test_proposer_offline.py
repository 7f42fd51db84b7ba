"""The offline proposer: one constant per proposal, exact literal edits, and a search that learns.

Runs on tests/support/sample_train.py (and the real train.py where there is one), never the harness.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from autoresearch_ci.proposers.base import ProposalContext
from autoresearch_ci.proposers.constants import apply_move, candidate_moves, find_constants, format_literal
from autoresearch_ci.proposers.offline import OfflineProposer
from autoresearch_ci.records import ExperimentRecord, Proposal, Verdict

HERE = Path(__file__).resolve().parent
SAMPLE = (HERE / "support" / "sample_train.py").read_text()
REAL_TRAIN = HERE.parent / "train.py"


def context(source: str = SAMPLE, recent=(), siblings=(), seed: int = 0) -> ProposalContext:
    return ProposalContext(
        program_md="# program",
        resources_md="",
        files={"train.py": source},
        parent_commit="a" * 40,
        recent=list(recent),
        siblings=list(siblings),
        seed=seed,
    )


def record(i: int, name: str, old, new, decision: str | None) -> ExperimentRecord:
    return ExperimentRecord(
        id=f"20261122-000000-{i:06x}",
        parent_commit="p" * 40,
        preset="cpu",
        runner="local",
        hypothesis=f"move {name}",
        edit={"name": name, "old": old, "new": new, "file": "train.py"},
        verdict=Verdict(decision=decision, reason="test") if decision else None,
    )


def module_values(source: str) -> dict[str, object]:
    """Every module-level simple assignment, evaluated: what the program would actually see."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            if isinstance(target, ast.Name):
                try:
                    out[target.id] = eval(compile(ast.Expression(node.value), "x", "eval"), {}, dict(out))
                except Exception:
                    out[target.id] = ast.dump(node.value)
    return out


def assert_single_edit(before: str, p: Proposal) -> None:
    assert p.ok, p.error
    after = p.files["train.py"]
    compile(after, "train.py", "exec")
    e = p.edit
    assert set(e) == {"name", "old", "new", "file"} and e["file"] == "train.py"
    a, b = module_values(before), module_values(after)
    changed = {k for k in a if a[k] != b.get(k)} - {"GRAD_ACCUM"}  # derived from TOTAL_BATCH_SIZE
    assert changed == {e["name"]}, changed
    assert b[e["name"]] == e["new"] and a[e["name"]] == e["old"]
    assert type(e["new"]) is type(e["old"])  # ints stay ints, floats stay floats
    # exactly one line differs, and only inside the literal
    diff = [(x, y) for x, y in zip(before.splitlines(), after.splitlines(), strict=True) if x != y]
    assert len(diff) == 1 and diff[0][0].split("=")[0] == diff[0][1].split("=")[0]
    assert e["name"] in p.hypothesis and p.hypothesis.endswith(".")


def test_finds_the_right_constants():
    consts = find_constants(SAMPLE)
    assert set(consts) == {
        "DEPTH",
        "ASPECT_RATIO",
        "HEAD_DIM",
        "N_HEAD",
        "MLP_HIDDEN",
        "TOTAL_BATCH_SIZE",
        "DEVICE_BATCH_SIZE",
        "MATRIX_LR",
        "EMBEDDING_LR",
        "UNEMBEDDING_LR",
        "WEIGHT_DECAY",
        "ADAM_BETA2",
        "WARMDOWN_RATIO",
        "LOGIT_BIAS",
    }  # no SEED, DATA_SEED, strings, bools, tuples or expressions
    assert consts["LOGIT_BIAS"].value == -1.0
    assert consts["TOTAL_BATCH_SIZE"].value == 2**14 and consts["TOTAL_BATCH_SIZE"].pow2_exponent
    src = "A = 1\nA = 2\nB = 3\nB += 1\nC = 0.5\nlower = 3\nD = E = 4\n"
    assert set(find_constants(src)) == {"C"}  # reassigned names are ambiguous


def test_literal_rewrite_preserves_formatting():
    src = "X = 3e-4  # comment\nY: int = 1_024\nZ = - 0.5\nW = 2 ** 10\ns = 'é'; V = 0.02\n"
    c = find_constants(src)
    assert apply_move(src, c["X"], 0.00042) == src.replace("3e-4", "4.2e-4")
    assert apply_move(src, c["Y"], 2048) == src.replace("1_024", "2_048")
    assert apply_move(src, c["Z"], -0.7) == src.replace("- 0.5", "-0.7")
    assert apply_move(src, c["W"], 2**11) == src.replace("2 ** 10", "2 ** 11")
    # the offsets ast gives are in bytes: a non-ASCII character earlier on the line must not shift them
    assert apply_move(src, c["V"], 0.028) == src.replace("0.02", "0.028")
    assert format_literal(0.00003, "0.001") == "0.00003" and format_literal(2.0, "1.5") == "2.0"


def test_moves_keep_integer_ness_and_sane_bounds():
    c = find_constants(SAMPLE)
    for name, const in c.items():
        for m in candidate_moves(const):
            assert type(m.new) is type(const.value), (name, m)
            assert (m.new > 0) == (const.value > 0) or const.value == 0, (name, m)
    powers = {m.new for m in candidate_moves(c["HEAD_DIM"])}
    assert powers and all(v & (v - 1) == 0 for v in powers)
    assert {m.new for m in candidate_moves(c["TOTAL_BATCH_SIZE"])} <= {2**k for k in range(20)}
    assert all(m.new % 64 == 0 for m in candidate_moves(c["MLP_HIDDEN"]))
    assert all(0 < m.new < 1 for m in candidate_moves(c["ADAM_BETA2"]))
    assert all(0 < m.new <= 1 for m in candidate_moves(c["WARMDOWN_RATIO"]))
    assert all(m.new < 0 for m in candidate_moves(c["LOGIT_BIAS"]))
    assert {m.new for m in candidate_moves(c["DEPTH"]) if m.cost == 0} == {3, 5}


def test_deterministic_per_seed_and_varies_across_seeds():
    ctx = context(recent=[record(1, "MATRIX_LR", 0.014, 0.02, "discard")])
    first = [OfflineProposer(seed).propose(ctx) for seed in range(8)]
    again = [OfflineProposer(seed).propose(ctx) for seed in range(8)]
    assert [(p.edit, p.hypothesis, p.files) for p in first] == [
        (p.edit, p.hypothesis, p.files) for p in again
    ]
    assert len({(p.edit["name"], p.edit["new"]) for p in first}) > 2
    for p in first:
        assert_single_edit(SAMPLE, p)


def test_every_proposal_is_one_compiling_constant_edit():
    for seed in range(30):
        assert_single_edit(SAMPLE, OfflineProposer(seed).propose(context(seed=seed)))


def test_continues_in_the_direction_that_was_kept():
    # MATRIX_LR went 0.014 -> 0.02 and was kept: the next move on it goes further up, with a similar step.
    for seed in range(10):
        p = OfflineProposer(seed).propose(context(recent=[record(1, "MATRIX_LR", 0.014, 0.02, "keep")]))
        assert p.edit["name"] == "MATRIX_LR" and p.edit["new"] > 0.02 and p.edit["new"] <= 0.04, p.edit
        assert "further" in p.hypothesis
    # lowering DEPTH 5 -> 4 was kept: continue down
    p = OfflineProposer(0).propose(context(recent=[record(1, "DEPTH", 5, 4, "keep")]))
    assert p.edit == {"name": "DEPTH", "old": 4, "new": 3, "file": "train.py"}


def test_after_a_failure_tries_the_opposite_way_or_a_smaller_step():
    src = "MATRIX_LR = 0.02\n"
    recent = [record(1, "MATRIX_LR", 0.02, 0.028, "discard")]
    for seed in range(10):
        p = OfflineProposer(seed).propose(context(src, recent))
        assert p.edit["new"] < 0.02 or p.edit["new"] < 0.028 and "smaller" in p.hypothesis, p.edit
    recent.append(record(2, "MATRIX_LR", 0.02, 0.014, "crash"))
    for seed in range(10):  # both ways failed at this step: a smaller step either way
        p = OfflineProposer(seed).propose(context(src, recent))
        assert p.edit["new"] in (0.017, 0.024), p.edit


def test_never_repeats_a_tried_edit_nor_a_sibling():
    # what the first 20 seeds would propose on a fresh ledger, recorded with every kind of outcome
    fresh = [OfflineProposer(seed).propose(context()).edit for seed in range(20)]
    outcomes = [None, "infra-error", "invalid", "discard", "proposal-failed"]
    recent = [record(i, e["name"], e["old"], e["new"], outcomes[i % 5]) for i, e in enumerate(fresh)]
    tried = {(e["name"], e["old"], e["new"]) for e in fresh}
    for seed in range(20):
        p = OfflineProposer(seed).propose(context(recent=recent))
        assert (p.edit["name"], p.edit["old"], p.edit["new"]) not in tried
        # nor what a sibling of this tick already proposed
        q = OfflineProposer(seed).propose(context(recent=recent, siblings=[p]))
        assert q.edit != p.edit and (q.edit["name"], q.edit["old"], q.edit["new"]) not in tried
    # one constant, so a repeat is the only other way out
    src = "DEPTH = 4\n"
    recent = [record(1, "DEPTH", 4, 3, None), record(2, "DEPTH", 4, 5, "infra-error")]
    p = OfflineProposer(0).propose(context(src, recent))
    q = OfflineProposer(0).propose(context(src, recent, siblings=[p]))
    assert {p.edit["new"], q.edit["new"]}.isdisjoint({3, 4, 5}) and p.edit["new"] != q.edit["new"]


def test_a_long_run_never_repeats_and_ends_cleanly():
    """Simulate ticks with a random judge until the search has nothing left; no edit comes twice."""
    src = "LR = 0.02\nDEPTH = 4\nHEAD_DIM = 64\n"
    files, recent, seen = {"train.py": src}, [], set()
    judge = random.Random(3)
    for i in range(500):
        p = OfflineProposer(5).propose(context(files["train.py"], recent))
        if not p.ok:
            assert "nothing left" in p.error
            break
        assert_single_edit(files["train.py"], p)
        key = (p.edit["name"], p.edit["old"], p.edit["new"])
        assert key not in seen
        seen.add(key)
        decision = "keep" if judge.random() < 0.15 else judge.choice(["discard", "crash", "invalid"])
        recent.append(record(i, p.edit["name"], p.edit["old"], p.edit["new"], decision))
        if decision == "keep":
            files = p.files
    else:
        pytest.fail("the search never ran out")
    assert len(seen) > 20


def test_widens_steps_when_the_near_ones_are_used():
    src = "MATRIX_LR = 0.02\n"
    near = [0.028, 0.014, 0.04, 0.01, 0.024, 0.017]
    recent = [record(i, "MATRIX_LR", 0.02, v, "discard") for i, v in enumerate(near)]
    p = OfflineProposer(0).propose(context(src, recent))
    assert p.ok and p.edit["new"] not in near and (p.edit["new"] >= 0.06 or p.edit["new"] <= 0.0066)


def test_failures_are_reported_not_raised():
    p = OfflineProposer(0).propose(context("import torch\nlr = 3\n"))
    assert not p.ok and "no top-level numeric constants" in p.error
    p = OfflineProposer(0).propose(
        ProposalContext(program_md="", resources_md="", files={}, parent_commit="x")
    )
    assert not p.ok and "train.py" in p.error
    p = OfflineProposer(0).propose(context("def broken(:\n"))
    assert not p.ok and "does not parse" in p.error


def test_ledger_noise_is_tolerated():
    recent = [
        record(1, "WINDOW_PATTERN", "SSSL", "LLLL", "discard"),  # not numeric
        ExperimentRecord(id="b", kind="baseline", parent_commit="p", preset="cpu", runner="local"),
        ExperimentRecord(id="f", parent_commit="p", preset="cpu", runner="local", hypothesis="free-form"),
        record(2, "MATRIX_LR", 0.02, 0.028, None),  # still pending: counts as tried
    ]
    for seed in range(10):
        p = OfflineProposer(seed).propose(context(recent=recent))
        assert_single_edit(SAMPLE, p)
        assert (p.edit["name"], p.edit["new"]) != ("MATRIX_LR", 0.028)


def test_device_specific_constants_of_the_other_device_are_left_alone():
    src = "GPU_DEPTH = 8\nCPU_DEPTH = 4\nMATRIX_LR = 0.02\nLOG_EVERY_SECONDS = 1.0\n"
    assert set(find_constants(src)) == {"GPU_DEPTH", "CPU_DEPTH", "MATRIX_LR"}
    for device, other in (("cpu", "GPU_"), ("cuda", "CPU_")):
        names = {OfflineProposer(s, device=device).propose(context(src)).edit["name"] for s in range(30)}
        assert names and not any(n.startswith(other) for n in names), names
    assert {OfflineProposer(s).propose(context(src)).edit["name"] for s in range(30)} == {
        "GPU_DEPTH",
        "CPU_DEPTH",
        "MATRIX_LR",
    }


@pytest.mark.skipif(not REAL_TRAIN.exists(), reason="the baseline train.py is not written yet")
def test_on_the_real_train_py():
    src = REAL_TRAIN.read_text()
    assert len(find_constants(src)) >= 10, "train.py should expose its hyperparameters as module constants"
    for seed in range(20):
        for device in (None, "cpu", "cuda"):
            assert_single_edit(src, OfflineProposer(seed, device=device).propose(context(src, seed=seed)))
