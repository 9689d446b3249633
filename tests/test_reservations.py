"""Token reservations adapt to how the provider counts (issue 13, item 11): with about a token a character (CJK
text) a max_tokens limit is never passed by more than one call's output cap."""

from __future__ import annotations

from typing import Any

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import Completion
from rlm_kernel.core.lm.support import estimate_tokens
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
