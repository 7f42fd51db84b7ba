"""The Anthropic proposer, with the REAL `anthropic` client talking to a local fake Messages API.

Every failure mode must come back as Proposal(ok=False, error=..., usage=...) and never raise:
refusals, truncation, missing tool calls, malformed tool input, a train.py that does not compile,
API errors after the SDK's own retries, timeouts and a spent token budget.
"""

from __future__ import annotations

import socket
import time

import anthropic
import pytest
from support.fake_anthropic import FakeAnthropic, Reply, error_reply, text_reply, tool_reply

from autoresearch_ci.proposers import prompt
from autoresearch_ci.proposers.anthropic import PRICES, AnthropicProposer, ModelPrice, price_for
from autoresearch_ci.proposers.base import ProposalContext
from autoresearch_ci.records import ExperimentRecord, LLMUsage, Proposal, Verdict

MODEL = "claude-opus-5-5"
KEY = "sk-ant-test-4f9c2e7a"
TRAIN = "import torch\n\nMATRIX_LR = 0.02\nDEPTH = 4\n\n\ndef train(ctx):\n    return None\n"
NEW_TRAIN = TRAIN.replace("MATRIX_LR = 0.02", "MATRIX_LR = 0.03")
GOOD = {"hypothesis": "Raise MATRIX_LR to 0.03 to learn faster.", "train_py": NEW_TRAIN}


@pytest.fixture
def fake():
    with FakeAnthropic() as f:
        yield f


def make(fake, **kw) -> AnthropicProposer:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 10.0)
    kw.setdefault("max_output_tokens", 8000)
    return AnthropicProposer(MODEL, api_key=KEY, base_url=fake.url, **kw)


def ctx(siblings=(), recent=()) -> ProposalContext:
    return ProposalContext(
        program_md="# Program\nLower val_bpb.",
        resources_md="- MATRIX_LR above 0.05 diverges (exp 1).",
        files={"train.py": TRAIN},
        parent_commit="c" * 40,
        recent=list(recent),
        siblings=list(siblings),
    )


def record(i: int, hyp: str, decision: str, delta: float | None) -> ExperimentRecord:
    return ExperimentRecord(
        id=f"20261122-01000{i}-abcdef",
        parent_commit="p",
        preset="cpu",
        runner="local",
        hypothesis=hyp,
        verdict=Verdict(decision=decision, reason="r", delta=delta),
    )


def failed(p: Proposal, *words: str) -> None:
    assert not p.ok and p.error, p
    for w in words:
        assert w in p.error, p.error
    assert KEY not in p.model_dump_json()


def test_normal_reply_and_what_was_sent(fake):
    usage = {
        "input_tokens": 2000,
        "output_tokens": 500,
        "cache_creation_input_tokens": 3000,
        "cache_read_input_tokens": 10000,
    }
    fake.push(tool_reply({**GOOD, "rationale": "the ledger says so"}, usage=usage, text="Here it is."))
    sibling = Proposal(
        proposer="anthropic",
        hypothesis="Swap ReLU^2 for SwiGLU in the MLP.",
        files={"train.py": TRAIN.replace("DEPTH = 4", "DEPTH = 6")},
        parent_commit="c" * 40,
    )
    recent = [
        record(1, "Lower the warm-down to 0.3", "discard", 0.0042),
        record(2, "Depth 6", "keep", -0.011),
    ]
    p = make(fake).propose(ctx([sibling], recent))

    assert p.ok, p.error
    assert p.proposer == f"anthropic:{MODEL}" and p.parent_commit == "c" * 40
    assert p.hypothesis == GOOD["hypothesis"] and p.files == {"train.py": NEW_TRAIN}
    u = p.usage
    assert (u.model, u.input_tokens, u.output_tokens) == (MODEL, 2000, 500)
    assert (u.cache_creation_input_tokens, u.cache_read_input_tokens) == (3000, 10000)
    assert u.cost_usd == pytest.approx((2000 * 4 + 500 * 20 + 3000 * 5 + 10000 * 0.2) / 1e6)

    (req,) = fake.requests
    body = req["body"]
    assert req["path"] == "/v1/messages" and req["headers"]["Authorization"] == f"Bearer {KEY}"
    assert body["model"] == MODEL and body["max_tokens"] == 8000
    assert body["tool_choice"] == {"type": "tool", "name": "submit_experiment"}
    (tool,) = body["tools"]
    assert tool["name"] == "submit_experiment" and tool["strict"] is True
    assert tool["input_schema"]["required"] == ["hypothesis", "train_py"]
    assert set(tool["input_schema"]["properties"]) == {"hypothesis", "train_py", "rationale"}
    # the stable parts are cached system blocks; the volatile part comes after the last breakpoint
    s1, s2 = body["system"]
    assert s1["cache_control"] == {"type": "ephemeral"} and "# Program" in s1["text"]
    assert s2["cache_control"] == {"type": "ephemeral"} and TRAIN in s2["text"] and "diverges" in s2["text"]
    (msg,) = body["messages"]
    assert msg["role"] == "user"
    volatile = msg["content"][0]["text"]
    assert all("cache_control" not in block for block in msg["content"])
    assert "Swap ReLU^2 for SwiGLU" in volatile and "+DEPTH = 6" in volatile  # the sibling and its diff
    assert "20261122-010001-abcdef | discard | delta +0.0042 | Lower the warm-down to 0.3" in volatile
    assert "keep | delta -0.0110" in volatile
    assert "Swap ReLU" not in s1["text"] + s2["text"]  # siblings never invalidate the cached prefix


def test_429_with_retry_after_then_success(fake):
    fake.push(error_reply(429, "rate_limit_error", "slow down", {"retry-after-ms": "1"}), tool_reply(GOOD))
    p = make(fake, max_retries=2).propose(ctx())
    assert p.ok, p.error
    assert len(fake.requests) == 2


def test_529_overloaded_then_success(fake):
    fake.push(error_reply(529, "overloaded_error", "Overloaded", {"retry-after-ms": "1"}), tool_reply(GOOD))
    p = make(fake, max_retries=2).propose(ctx())
    assert p.ok, p.error
    assert len(fake.requests) == 2


def test_500_until_retries_are_exhausted(fake):
    fake.push(*[error_reply(500, "api_error", "Internal server error", {"retry-after-ms": "1"})] * 3)
    p = make(fake, max_retries=2).propose(ctx())
    failed(p, "500", "api_error", "Internal server error", "after retries")
    assert len(fake.requests) == 3
    assert p.usage.total_tokens() == 0 and p.usage.model == MODEL


def test_non_retryable_error_is_reported_once(fake):
    fake.push(error_reply(400, "invalid_request_error", "max_tokens: too large"))
    p = make(fake, max_retries=3).propose(ctx())
    failed(p, "400", "max_tokens: too large")
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    "tool_input, words",
    [
        ({"hypothesis": "no file"}, ["'train_py'", "missing"]),
        (
            {"hypothesis": "wrong type", "train_py": ["import torch"]},
            ["'train_py'", "must be a string", "list"],
        ),
        ({"train_py": NEW_TRAIN}, ["'hypothesis'", "missing"]),
        ({"hypothesis": "  ", "train_py": NEW_TRAIN}, ["'hypothesis'", "empty"]),
        ({"hypothesis": "Same file.", "train_py": TRAIN}, ["identical"]),
        ({"hypothesis": "Broken.", "train_py": "def train(ctx:\n    pass\n"}, ["does not compile", "line 1"]),
        ("not an object", ["expected an object"]),
    ],
)
def test_malformed_tool_input(fake, tool_input, words):
    fake.push(tool_reply(tool_input))
    p = make(fake).propose(ctx())
    failed(p, *words)
    assert p.usage.input_tokens == 1200 and p.usage.output_tokens == 400  # what the bad reply cost


def test_refusal(fake):
    fake.push(text_reply("I can't help with that.", stop_reason="refusal"))
    failed(make(fake).propose(ctx()), "refused", "I can't help with that.")


def test_reply_cut_at_max_tokens(fake):
    fake.push(
        tool_reply({"hypothesis": "Long.", "train_py": "import torch\nx = ("}, stop_reason="max_tokens")
    )
    p = make(fake).propose(ctx())
    failed(p, "max_tokens=8000", "cut off")
    assert p.usage.output_tokens == 400


def test_text_without_tool_call(fake):
    fake.push(text_reply("I think you should raise the learning rate."))
    failed(make(fake).propose(ctx()), "without calling submit_experiment", "raise the learning rate")


def test_tool_call_to_another_name(fake):
    fake.push(tool_reply(GOOD, name="some_other_tool"))
    failed(make(fake).propose(ctx()), "without calling submit_experiment")


def test_timeout(fake):
    fake.push(Reply(body=tool_reply(GOOD).body, delay=3.0))
    t0 = time.monotonic()
    p = make(fake, timeout=0.5).propose(ctx())
    assert time.monotonic() - t0 < 2.5
    failed(p, "did not answer within 0.5 s")


def test_unreachable_server():
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proposer = AnthropicProposer(
        MODEL, api_key=KEY, base_url=f"http://127.0.0.1:{port}", max_retries=0, timeout=2
    )
    failed(proposer.propose(ctx()), "could not reach the Anthropic API")


def test_budget_spent_before_sending(fake):
    fake.push(tool_reply(GOOD))  # costs 1200 + 400 tokens
    proposer = make(fake, tick_token_budget=2000)
    assert proposer.propose(ctx()).ok and proposer.spent_tokens == 1600
    failed(proposer.propose(ctx()), "budget too small", "400 tokens left", "no request sent")
    assert len(fake.requests) == 1
    failed(make(fake).propose(ctx(), token_budget=0), "spent", "no request sent")
    failed(make(fake).propose(ctx(), token_budget=300), "too small", "no request sent")
    assert len(fake.requests) == 1


def test_budget_caps_max_tokens_and_resets_each_tick(fake):
    fake.push(tool_reply(GOOD), tool_reply(GOOD), tool_reply(GOOD))
    proposer = make(fake, tick_token_budget=6000, max_output_tokens=20000)
    assert proposer.propose(ctx()).ok and proposer.spent_tokens == 1600
    assert fake.requests[0]["body"]["max_tokens"] < 6000  # the budget, less the input estimate
    assert proposer.propose(ctx()).ok and proposer.spent_tokens == 3200
    assert fake.requests[1]["body"]["max_tokens"] < fake.requests[0]["body"]["max_tokens"]
    # the next tick (the ledger has moved on) starts with the whole budget again
    next_tick = ctx(recent=[record(1, "Raise MATRIX_LR", "discard", 0.001)])
    assert proposer.propose(next_tick).ok and proposer.spent_tokens == 1600
    assert fake.requests[2]["body"]["max_tokens"] > fake.requests[1]["body"]["max_tokens"] + 1000
    assert len(fake.requests) == 3


def test_no_key_means_no_request(fake, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    p = AnthropicProposer(MODEL, base_url=fake.url).propose(ctx())
    failed(p, "ANTHROPIC_API_KEY")
    assert fake.requests == []


def test_key_from_environment_and_never_shown(fake, monkeypatch, caplog):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    fake.push(error_reply(401, "authentication_error", "invalid x-api-key"))
    caplog.set_level("DEBUG")
    proposer = AnthropicProposer(MODEL, base_url=fake.url, max_retries=0)
    p = proposer.propose(ctx())
    failed(p, "401", "invalid x-api-key")
    assert fake.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(proposer) and KEY not in caplog.text


def test_injected_client_is_used(fake):
    client = anthropic.Anthropic(api_key=KEY, base_url=fake.url, max_retries=0)
    fake.push(tool_reply(GOOD))
    p = AnthropicProposer("claude-sonnet-4-6", client=client).propose(ctx())
    assert p.ok and p.proposer == "anthropic:claude-sonnet-4-6"
    assert fake.requests[0]["body"]["model"] == "claude-sonnet-4-6"
    assert p.usage.cost_usd == pytest.approx((1200 * 3 + 400 * 15) / 1e6)


def test_summarize(fake):
    fake.push(text_reply("- MATRIX_LR 0.03 is best so far."))
    proposer = make(fake, summary_max_tokens=512)
    assert proposer.summarize("long resources text", "Condense this.") == "- MATRIX_LR 0.03 is best so far."
    body = fake.requests[0]["body"]
    assert body["max_tokens"] == 512 and body["system"] == "Condense this." and "tools" not in body
    assert proposer.last_summary_usage.output_tokens == 400
    fake.push(error_reply(500, "api_error", "boom", {"x-should-retry": "false"}))
    assert proposer.summarize("x", "y") is None
    fake.push(text_reply("cut", stop_reason="max_tokens"))
    assert proposer.summarize("x", "y") is None
    fake.push(text_reply("no", stop_reason="refusal"))
    assert proposer.summarize("x", "y") is None


def test_prices():
    assert price_for("claude-haiku-4-5-20251001") == PRICES["claude-haiku-4-5"]
    assert price_for("claude-opus-5") == PRICES["claude-opus-5"]
    assert price_for("claude-opus-5-5") == PRICES["claude-opus-5-5"]
    config_price = ModelPrice(1.0, 2.0)
    assert price_for("claude-unknown-9", default=config_price) is config_price
    usage = LLMUsage(
        input_tokens=1_000_000,
        output_tokens=1_000_000,
        cache_creation_input_tokens=1_000_000,
        cache_read_input_tokens=1_000_000,
    )
    assert config_price.cost(usage) == pytest.approx(1 + 2 + 1.25 + 0.1)


def test_ledger_rendering_is_compact():
    recs = [record(i % 10, f"idea {i} " + "x" * 300, "discard", 0.001) for i in range(60)]
    text = prompt.render_ledger(recs)
    lines = text.splitlines()
    assert len(lines) == prompt.LEDGER_LIMIT and all(len(line) < 320 for line in lines)
    assert "idea 59" in lines[-1]
    assert prompt.render_ledger([]) == "(no experiments yet)"


def test_summarize_for_learnings(fake):
    """The hook learnings.condense() calls: the prompt is the user turn, a short fixed system prompt."""
    fake.push(text_reply("### What works\n- x (`20261122-010001-abcdef`)"))
    out = make(fake).summarize_for_learnings("Rewrite the summary ...")
    assert out.startswith("### What works")
    body = fake.requests[0]["body"]
    assert body["messages"] == [{"role": "user", "content": "Rewrite the summary ..."}]
    assert "research loop" in body["system"]
