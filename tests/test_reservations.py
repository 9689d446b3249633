"""Token reservations adapt to how the provider counts (issue 13, item 11): with about a token a character (CJK
text) a max_tokens limit is never passed by more than one call's output cap."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import Completion
from rlm_kernel.core.lm.support import estimate_tokens
from rlm_kernel.models.policies import ScriptedReplies, count_tokens, messages_tokens
from rlm_kernel.models.server import ModelServer
from tests.conftest import repl

OUTPUT = repl("x = llm_query('\\u8bf7' * 400)\nprint(len(x))")


class OneTokenACharacter:
    """A provider that counts a token per character, as for CJK text (the engine's first guess is three)."""

    def estimate_tokens(self, messages: list[dict[str, Any]]) -> int:
        return estimate_tokens(messages)

    def price(self, model: str, input_tokens: int, output_tokens: int) -> float:
        return 0.0

    async def acomplete(self, messages, *, model, max_output_tokens, timeout, params=None, on_text=None):
        reply = OUTPUT if messages[0]["role"] == "system" else "\u597d" * 50
        reply = reply[: max_output_tokens or len(reply)]
        used = Usage(1, sum(len(str(m["content"])) for m in messages), len(reply))
        return Completion(reply, used, model, 0.0)


@pytest.mark.parametrize("limit", [12_000, 20_000, 30_000])
def test_a_token_budget_binds_when_the_provider_counts_a_token_a_character(limit):
    cap = 200
    result = RLM(
        model="cjk", lm=OneTokenACharacter(), max_tokens=limit, max_output_tokens=cap, max_iterations=50
    ).completion("\u6587" * 2_000, "q")
    assert result.status == "budget" and result.limit == "max_tokens"
    assert result.usage.input_tokens + result.usage.output_tokens <= limit + cap


class GeneratingServer:
    """A local server's policy that ignores max_tokens: every sub-reply would run to about 30,000 tokens, made a
    piece at a time as a model generates, and it counts every token it takes in or makes, as a provider bills."""

    def __init__(self, root_replies: list[str]) -> None:
        self.root = ScriptedReplies(root_replies)
        self.counted: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, messages):
        if messages[0]["role"] == "system":
            reply = self.root(messages)
            self._count(messages_tokens(messages) + count_tokens(reply))
            return reply
        return self._generate(messages)

    def _generate(self, messages):
        made = messages_tokens(messages)
        try:
            for _ in range(10_000):
                made += count_tokens("lorem ipsum ")
                yield "lorem ipsum "
                time.sleep(0.001)
        finally:  # the client closed the stream, or the reply is done
            self._count(made)

    def _count(self, tokens: int) -> None:
        with self._lock:
            self.counted.append(tokens)


@pytest.mark.timeout(120)
def test_concurrent_calls_to_a_server_that_ignores_max_tokens_never_pass_the_token_budget():
    fan_out = repl("outs = llm_query_batched([f'part {i}' for i in range(8)])\nprint([len(o) for o in outs])")
    server_policy = GeneratingServer([fan_out, fan_out, fan_out, repl("FINAL('x')")])
    limit = 12_000
    with ModelServer(server_policy) as server:
        result = RLM(
            model="openai/policy", api_base=server.url, max_tokens=limit, max_output_tokens=300, concurrency=8
        ).completion("ctx", "q")
        stats = server.stats()
        deadline = time.monotonic() + 10
        while len(server_policy.counted) < stats["served"] and time.monotonic() < deadline:
            time.sleep(0.05)  # a stream the client closed is counted once the server notices
    assert len(server_policy.counted) == stats["served"]
    in_flight = stats["max_in_flight"]
    assert in_flight > 1  # the sub-calls were in flight together
    assert result.usage.tokens <= limit
    assert sum(server_policy.counted) <= limit, f"the server made {sum(server_policy.counted):,} tokens"


@pytest.mark.timeout(120)
def test_a_server_that_cannot_stream_and_ignores_max_tokens_has_its_overshoot_reserved_for_later_calls():
    """A server that answers with one body cannot be ended at the cap: once a reply has passed its cap, each
    later call reserves that overshoot too, so the waves after the first stay within the budget."""
    fan_out = repl("outs = llm_query_batched([f'part {i}' for i in range(8)])\nprint([len(o) for o in outs])")
    root = ScriptedReplies([fan_out] * 6 + [repl("FINAL('x')")])
    counted: list[int] = []
    lock = threading.Lock()

    def policy(messages):
        if messages[0]["role"] == "system":
            reply = root(messages)
        else:
            time.sleep(0.2)  # a sub-call takes a while, so the fan-out's calls are in flight together
            reply = "lorem ipsum " * 300  # 900 tokens
        with lock:
            counted.append(messages_tokens(messages) + count_tokens(reply))
        return reply

    limit = 12_000
    with ModelServer(policy, streams=False) as server:
        result = RLM(
            model="openai/policy", api_base=server.url, max_tokens=limit, max_output_tokens=300, concurrency=8
        ).completion("ctx", "q")
        assert server.stats()["max_in_flight"] > 1
    assert result.status == "budget"
    assert result.usage.tokens == sum(counted)  # each call charged what the server reported
    assert sum(counted) <= limit, f"the server made {sum(counted):,} tokens"
