"""The LLM proposer: Claude, through the real `anthropic` SDK, answers with one forced tool call.

One request per proposal. The model reads program.md, resources.md, the recent ledger, the current
train.py and the siblings of this tick (see prompt.py for the layout and its cache breakpoints) and
must call `submit_experiment` with a hypothesis and the complete new train.py (`strict` schema,
`tool_choice` forcing that tool).

Nothing here raises for a bad outcome. A refusal, a reply cut at max_tokens, a reply without the tool
call, a malformed tool input, a train.py that does not compile or did not change, an API error after
the SDK's retries (429, 5xx and 529 overloaded are retried by the SDK, honouring retry-after), a
timeout, or a spent token budget: each is a Proposal(ok=False, error=...) carrying the usage spent.

The key comes from the `api_key` argument or ANTHROPIC_API_KEY, nowhere else, and is never logged.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import anthropic

from autoresearch_ci.proposers import prompt
from autoresearch_ci.proposers.base import ProposalContext
from autoresearch_ci.records import LLMUsage, Proposal

log = logging.getLogger(__name__)

TARGET = "train.py"

SUMMARY_SYSTEM = (
    "You condense the notes of an automated ML research loop. Follow the user's instructions exactly, "
    "use only facts and experiment ids that appear in the text, and output only what is asked for."
)


@dataclass(frozen=True)
class ModelPrice:
    """US dollars per million tokens. Cache prices default to 1.25x (5-minute write) and 0.1x input."""

    input: float
    output: float
    cache_write: float | None = None
    cache_read: float | None = None

    def cost(self, usage: LLMUsage) -> float:
        write = self.cache_write if self.cache_write is not None else 1.25 * self.input
        read = self.cache_read if self.cache_read is not None else 0.1 * self.input
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_creation_input_tokens * write
            + usage.cache_read_input_tokens * read
        ) / 1e6


# platform.claude.com pricing pages (models overview, per-model pages), standard tier, 5-minute cache.
# A model id matches the longest key it starts with, so dated ids (claude-haiku-4-5-20251001) resolve.
PRICES: dict[str, ModelPrice] = {
    "claude-fable-5-1": ModelPrice(10.0, 50.0, 12.5, 0.25),
    "claude-mythos-5-1": ModelPrice(10.0, 50.0, 12.5, 0.25),
    "claude-fable-5": ModelPrice(10.0, 50.0, 12.5, 1.0),
    "claude-mythos-5": ModelPrice(10.0, 50.0, 12.5, 1.0),
    "claude-opus-5-5": ModelPrice(4.0, 20.0, 5.0, 0.2),
    "claude-opus-5": ModelPrice(5.0, 25.0, 6.25, 0.5),
    "claude-opus-4-8": ModelPrice(5.0, 25.0, 6.25, 0.5),
    "claude-opus-4-7": ModelPrice(5.0, 25.0, 6.25, 0.5),
    "claude-opus-4-6": ModelPrice(5.0, 25.0, 6.25, 0.5),
    "claude-opus-4-5": ModelPrice(5.0, 25.0, 6.25, 0.5),
    "claude-sonnet-5-5": ModelPrice(2.0, 10.0, 2.5, 0.1),
    "claude-sonnet-5": ModelPrice(2.0, 10.0, 2.5, 0.2),
    "claude-sonnet-4-6": ModelPrice(3.0, 15.0, 3.75, 0.3),
    "claude-sonnet-4-5": ModelPrice(3.0, 15.0, 3.75, 0.3),
    "claude-haiku-5-5": ModelPrice(0.10, 0.50, 0.125, 0.01),
    "claude-haiku-4-5": ModelPrice(1.0, 5.0, 1.25, 0.1),
}
# For a model the table does not know: the most expensive current tier, so a cost cap errs on the safe side.
FALLBACK_PRICE = ModelPrice(10.0, 50.0)


def price_for(
    model: str, table: Mapping[str, ModelPrice] = PRICES, default: ModelPrice = FALLBACK_PRICE
) -> ModelPrice:
    matches = [k for k in table if model == k or model.startswith(k + "-") or model.startswith(k + "@")]
    return table[max(matches, key=len)] if matches else default


class AnthropicProposer:
    """Proposes one experiment per call by asking Claude; see the module docstring."""

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        base_url: str | None = None,
        max_output_tokens: int = 16000,
        max_retries: int = 4,
        timeout: float = 600.0,
        client: anthropic.Anthropic | None = None,
        tick_token_budget: int | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        default_price: ModelPrice = FALLBACK_PRICE,
        summary_max_tokens: int = 4096,
        target: str = TARGET,
    ):
        self.model = model
        self.name = f"anthropic:{model}"
        self.max_output_tokens = max_output_tokens
        self.max_retries = max_retries
        self.timeout = timeout
        self.tick_token_budget = tick_token_budget
        self.price = price_for(model, PRICES if prices is None else prices, default_price)
        self.summary_max_tokens = summary_max_tokens
        self.target = target
        self.spent_tokens = 0  # this tick's tokens, sent and received, summaries included
        self._tick: tuple | None = None
        self.last_summary_usage: LLMUsage | None = None
        self._client = client
        if client is None:
            key = api_key or os.environ.get("ANTHROPIC_API_KEY")
            if key:  # passed explicitly, so the SDK consults no other credential source
                self._client = anthropic.Anthropic(
                    api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout
                )

    def __repr__(self) -> str:
        return f"AnthropicProposer(model={self.model!r})"

    # -- budget -----------------------------------------------------------------------------------

    def _enter_tick(self, context: ProposalContext) -> None:
        """Start a new tick's count when the parent commit or the ledger moved on.

        Within a tick every proposal sees the same parent and ledger; every tick appends to the ledger
        (a failed proposal too), so a long-lived proposer (the local loop) starts each tick afresh,
        while one built per tick (CI) never needs to.
        """
        last = context.recent[-1].id if context.recent else None
        tick = (context.parent_commit, len(context.recent), last)
        if tick != self._tick:
            self._tick, self.spent_tokens = tick, 0

    def budget_left(self, token_budget: int | None = None) -> int | None:
        """Tokens this tick may still spend: the explicit budget, else the tick budget less what was spent."""
        if token_budget is not None:
            return token_budget
        if self.tick_token_budget is None:
            return None
        return self.tick_token_budget - self.spent_tokens

    def _usage(self, response) -> LLMUsage:
        u = getattr(response, "usage", None)
        usage = LLMUsage(
            model=self.model,
            input_tokens=getattr(u, "input_tokens", 0) or 0,
            output_tokens=getattr(u, "output_tokens", 0) or 0,
            cache_read_input_tokens=getattr(u, "cache_read_input_tokens", 0) or 0,
            cache_creation_input_tokens=getattr(u, "cache_creation_input_tokens", 0) or 0,
        )
        usage.cost_usd = self.price.cost(usage)
        self.spent_tokens += usage.total_tokens()
        return usage

    # -- proposing --------------------------------------------------------------------------------

    def propose(self, context: ProposalContext, token_budget: int | None = None) -> Proposal:
        """One experiment from Claude, or ok=False with the reason. `token_budget` overrides the tick's."""
        usage = LLMUsage(model=self.model)

        def fail(error: str) -> Proposal:
            log.warning("%s: failed proposal: %s", self.name, error)
            return Proposal(
                ok=False, proposer=self.name, parent_commit=context.parent_commit, error=error, usage=usage
            )

        if self._client is None:
            return fail("no Anthropic API key: set ANTHROPIC_API_KEY (or pass api_key)")
        self._enter_tick(context)
        current = context.files.get(self.target)
        if current is None:
            return fail(f"{self.target} is not among the editable files {sorted(context.files)}")

        system = prompt.system_blocks(context, self.target)
        message = prompt.user_message(context, self.target)
        max_tokens = self.max_output_tokens
        left = self.budget_left(token_budget)
        if left is not None:
            est_in = prompt.estimate_tokens(
                *(b["text"] for b in system), message["content"][0]["text"], json.dumps(prompt.SUBMIT_TOOL)
            )
            est_out = prompt.estimate_tokens(current) + 256  # the whole file comes back
            if left <= 0:
                return fail(f"token budget for this tick is spent ({left} tokens left); no request sent")
            if left < est_in + est_out:
                return fail(
                    f"token budget too small: {left} tokens left this tick, and this request needs about "
                    f"{est_in} input + {est_out} output tokens; no request sent"
                )
            max_tokens = min(max_tokens, left - est_in)

        log.info(
            "%s: asking for a proposal (max_tokens=%d, %d siblings)",
            self.name,
            max_tokens,
            len(context.siblings),
        )
        try:
            response = self._client.messages.create(
                model=self.model,
                max_tokens=max_tokens,
                system=system,
                tools=[prompt.SUBMIT_TOOL],
                tool_choice=prompt.TOOL_CHOICE,
                messages=[message],
            )
        except Exception as e:  # every failure is a failed proposal, never a crash of the tick
            return fail(self._describe(e))

        usage = self._usage(response)
        log.info(
            "%s: stop_reason=%s in=%d out=%d cache_read=%d cache_write=%d cost=$%.4f",
            self.name,
            response.stop_reason,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens,
            usage.cost_usd,
        )
        text = " ".join(" ".join(b.text.split()) for b in response.content if b.type == "text")
        excerpt = f": {text[:300]}" if text else ""
        if response.stop_reason == "refusal":
            return fail(f"the model refused{excerpt}")
        if response.stop_reason == "max_tokens":
            return fail(
                f"the reply was cut off at max_tokens={max_tokens} before the new {self.target} was complete"
            )
        calls = [b for b in response.content if b.type == "tool_use" and b.name == prompt.TOOL_NAME]
        if not calls:
            stop = response.stop_reason
            return fail(f"the model replied without calling {prompt.TOOL_NAME} (stop_reason={stop}){excerpt}")

        args = calls[0].input
        if not isinstance(args, dict):
            return fail(f"malformed {prompt.TOOL_NAME} input: expected an object, got {type(args).__name__}")
        problem = self._check_input(args, current)
        if problem:
            return fail(problem)
        new = args["train_py"] if args["train_py"].endswith("\n") else args["train_py"] + "\n"
        return Proposal(
            proposer=self.name,
            hypothesis=" ".join(args["hypothesis"].split()),
            files={self.target: new},
            parent_commit=context.parent_commit,
            usage=usage,
        )

    def _check_input(self, args: dict, current: str) -> str | None:
        tool = prompt.TOOL_NAME
        for field in ("hypothesis", "train_py"):
            if field not in args:
                return f"malformed {tool} input: the required field {field!r} is missing"
            if not isinstance(args[field], str):
                return f"malformed {tool} input: {field!r} must be a string, got {type(args[field]).__name__}"
            if not args[field].strip():
                return f"malformed {tool} input: {field!r} is empty"
        try:
            compile(args["train_py"], self.target, "exec")
        except SyntaxError as e:
            return f"the proposed {self.target} does not compile: {e.msg} (line {e.lineno})"
        except Exception as e:  # null bytes, absurd nesting
            return f"the proposed {self.target} does not compile: {type(e).__name__}: {e}"
        if args["train_py"].strip() == current.strip():
            return f"the proposed {self.target} is identical to the current one"
        return None

    def _describe(self, e: Exception) -> str:
        """A clear one-line reason for an exception from the SDK (it never contains the key)."""
        if isinstance(e, anthropic.APITimeoutError):
            return f"the Anthropic API did not answer within {self.timeout:g} s (retries: {self.max_retries})"
        if isinstance(e, anthropic.APIStatusError):
            retried = " after retries" if e.status_code in (408, 409, 429) or e.status_code >= 500 else ""
            kind = f" {e.type}" if e.type else ""
            return f"Anthropic API error {e.status_code}{kind}{retried}: {e.api_message or e.message}"
        if isinstance(e, anthropic.APIConnectionError):
            return f"could not reach the Anthropic API (retries: {self.max_retries}): {e}"
        return f"{type(e).__name__}: {e}"

    # -- summaries --------------------------------------------------------------------------------

    def summarize_for_learnings(self, request: str) -> str | None:
        """The `summarizer` that learnings.condense() calls: its prompt carries its own instructions."""
        return self.summarize(request, SUMMARY_SYSTEM)

    def summarize(self, text: str, instructions: str) -> str | None:
        """Condense `text` (resources.md) as `instructions` say; None on any failure, never raises."""
        self.last_summary_usage = None
        if self._client is None:
            return None
        left = self.budget_left()
        if left is not None and left < prompt.estimate_tokens(text, instructions) + self.summary_max_tokens:
            log.warning("%s: token budget too small for a summary (%d left)", self.name, left)
            return None
        try:
            response = self._client.messages.create(
                model=self.model,
                max_tokens=self.summary_max_tokens,
                system=instructions,
                messages=[{"role": "user", "content": text}],
            )
        except Exception as e:
            log.warning("%s: summary failed: %s", self.name, self._describe(e))
            return None
        self.last_summary_usage = self._usage(response)
        if response.stop_reason in ("refusal", "max_tokens"):
            log.warning("%s: summary failed: stop_reason=%s", self.name, response.stop_reason)
            return None
        out = "\n".join(b.text for b in response.content if b.type == "text").strip()
        return out or None
