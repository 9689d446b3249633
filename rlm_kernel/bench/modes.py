"""The paper's Table 1 modes: `direct` (the base model on the whole prompt), `rlm`, and `rlm-no-subcalls`.

`rlm-no-subcalls` is the paper's ablation ("RLM depth=0"): the root keeps its REPL but has no
`llm_query`, `llm_query_batched`, `rlm_query` or `rlm_query_batched`. The engine has no setting for
it yet, so the benchmark builds it from outside: a REPL that never holds those names (a call is a
NameError, as in a REPL that never had them) and an LM wrapper that takes their lines out of the
system prompt the model receives and says that sub-calls are off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlm_kernel.core.lm import LM, Completion, Messages
from rlm_kernel.core.repl import NamespaceREPL

MODES = ("rlm", "rlm-no-subcalls", "direct")
SUBCALL_TOOLS = frozenset({"llm_query", "llm_query_batched", "rlm_query", "rlm_query_batched"})
NO_SUBCALLS_NOTE = (
    "There are no sub-model calls in this run: llm_query, llm_query_batched, rlm_query and rlm_query_batched "
    "do not exist. Work with code alone."
)


class NoSubcallsREPL(NamespaceREPL):
    """An in-process REPL that refuses to hold the sub-call functions."""

    def set(self, name: str, value: object) -> None:
        if name in SUBCALL_TOOLS:
            self.namespace.pop(name, None)
            return
        super().set(name, value)


def without_subcalls(messages: Messages) -> Messages:
    """The messages with the system prompt's sub-call lines removed and the no-sub-calls note added."""
    if not messages or messages[0].get("role") != "system":
        return messages
    lines = str(messages[0]["content"]).split("\n")
    kept = [line for line in lines if not any(line.startswith(f"- `{tool}(") for tool in SUBCALL_TOOLS)]
    system = {**messages[0], "content": "\n".join(kept) + "\n\n" + NO_SUBCALLS_NOTE}
    return [system, *messages[1:]]


class NoSubcallsLM:
    """An LM that shows the model the system prompt of a REPL without sub-calls."""

    def __init__(self, lm: LM) -> None:
        self._lm = lm

    async def acomplete(
        self,
        messages: Messages,
        *,
        model: str,
        max_output_tokens: int | None,
        timeout: float,
        params: Mapping[str, Any] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        return await self._lm.acomplete(
            without_subcalls(messages),
            model=model,
            max_output_tokens=max_output_tokens,
            timeout=timeout,
            params=params,
            on_text=on_text,
        )

    def estimate_tokens(self, messages: Messages) -> int:
        return self._lm.estimate_tokens(messages)

    def price(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        return self._lm.price(model, input_tokens, output_tokens)

    def __getattr__(self, name: str) -> Any:  # close(), and whatever else an LM offers
        return getattr(self._lm, name)
