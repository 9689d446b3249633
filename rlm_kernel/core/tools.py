"""The functions a node puts in its REPL: sub-model calls, child RLMs, the answer protocol, SHOW_VARS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Protocol

from rlm_kernel.core.answers import answer_functions
from rlm_kernel.core.config import RunConfig
from rlm_kernel.core.errors import BudgetExhausted, ModelError, SubmitAnswer
from rlm_kernel.core.helpers import make_helpers
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import LM, Completion, Messages
from rlm_kernel.core.lm.support import oversize_prompt_message
from rlm_kernel.core.prompts import Capabilities
from rlm_kernel.core.repl import REPL
from rlm_kernel.core.trace import prompt_sha256
from rlm_kernel.core.tree import CallTree

PROMPT_PREVIEW_CHARS = 500


class AnswerDict(dict):  # type: ignore[type-arg]
    """The `answer` variable: setting answer["ready"] to a true value submits answer["content"]."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        if key == "ready" and value:
            raise SubmitAnswer(self.get("content"), "answer")


class Node(Protocol):
    """What the tools use of the node whose REPL they are in (core/node.py: Node)."""

    config: RunConfig
    tree: CallTree
    capabilities: Capabilities
    context: object
    repl: REPL
    answer: AnswerDict
    tools: dict[str, Any]

    def emit(self, kind: str, /, **data: Any) -> None: ...
    def current_block(self) -> dict[str, int | None]: ...
    def made_names(self) -> set[str]: ...
    def child(self, context: object, query: str, model: str | None) -> Any: ...
    def children(self, pairs: list[tuple[Any, ...]], model: str | None) -> list[Any]: ...
    def acall_model(
        self,
        messages: Messages,
        model: str,
        *,
        lm: LM,
        params: Mapping[str, Any],
        on_attempt: Callable[[int], None] | None = None,
    ) -> Coroutine[Any, Any, Completion]: ...


def make_tools(node: Node) -> dict[str, Any]:
    """The reserved names of `node`'s REPL (put back whenever the model rebinds one)."""

    def llm_query(prompt: str, model: str | None = None) -> str:
        """Ask a sub-model one question; it sees only `prompt`."""
        return node.tree.scope.run(sub_llm(node, str(prompt), model))

    def llm_query_batched(prompts: list[str], model: str | None = None) -> list[str]:
        """Ask many prompts concurrently; replies in order, a failed slot holds its error text."""

        async def gather() -> list[str]:
            return list(await asyncio.gather(*(sub_llm(node, str(p), model) for p in prompts)))

        return node.tree.scope.run(gather())

    def rlm_query(context: object, query: str, model: str | None = None) -> Any:
        """Start a child RLM on `context` with its own question; returns its answer."""
        if not node.capabilities.can_recurse:
            return llm_query(f"{query}\n\n{context_as_text(context)}", model)
        return node.child(context, str(query), model)

    def rlm_query_batched(pairs: Iterable[tuple[object, str]], model: str | None = None) -> list[Any]:
        """Run `[(context, query), ...]` as child RLMs in parallel; answers in order."""
        listed = [tuple(p) for p in pairs]
        if not node.capabilities.can_recurse:
            return llm_query_batched([f"{q}\n\n{context_as_text(c)}" for c, q in listed], model)
        return node.children(listed, model)

    def made() -> dict[str, object]:
        present = set(node.repl.names())
        return {n: node.repl.get(n) for n in node.made_names() if n in present and n not in node.tools}

    sub_calls = {
        "llm_query": llm_query,
        "llm_query_batched": llm_query_batched,
        "rlm_query": rlm_query,
        "rlm_query_batched": rlm_query_batched,
    }
    if not node.config.loop.sub_calls:
        sub_calls = {name: _switched_off(name) for name in sub_calls}
    return {
        "context": node.context,
        **make_helpers(node.context),
        **sub_calls,
        **answer_functions(node.repl.get, made),
        "answer": node.answer,
    }


def _switched_off(name: str) -> Callable[..., Any]:
    """What a sub-call name holds when sub-calls are off: calling it is the NameError of a REPL without it."""

    def switched_off(*args: Any, **kwargs: Any) -> Any:
        raise NameError(f"name {name!r} is not defined: this run has no sub-calls (sub_calls=False)")

    switched_off.__name__ = name
    return switched_off


async def sub_llm(node: Node, prompt: str, model: str | None) -> str:
    """A plain sub-model call; failures come back as text so one bad slot spoils nothing."""
    config, models = node.config, node.tree.models
    model = model or config.sub.model
    prompt = node.tree.redacted(prompt)  # remembered: the call below redacts the same text again, for free
    sub_id = node.tree.new_id("s")
    node.emit(
        "subcall_start",
        subcall_id=sub_id,
        kind="llm",
        model=model,
        prompt_preview=prompt[:PROMPT_PREVIEW_CHARS],
        prompt_chars=len(prompt),
        prompt_sha256=prompt_sha256(prompt),
        **node.current_block(),
    )
    started = time.perf_counter()
    usage, error = Usage(), None
    messages = [{"role": "user", "content": prompt}]
    window = models.sub_input_window(config, model)
    try:
        if window is not None and models.sub.estimate_tokens(messages) > window:
            # Sending it would fail at the provider after a slow upload, or be cut silently by a local server.
            reply = error = oversize_prompt_message(len(prompt), model, window)
        else:
            # Each request sent is a model_wait event: the trace counts model calls as the ledger does.
            def sent(attempt: int) -> None:
                node.emit("model_wait", subcall_id=sub_id, model=model, attempt=attempt)

            completion = await node.acall_model(
                messages, model, lm=models.sub, params=config.sub.params, on_attempt=sent
            )
            reply, usage = completion.text, completion.usage
    except BudgetExhausted as exc:
        reply = error = str(exc)
    except ModelError as exc:
        reply = error = f"Error: sub-model call failed: {exc}"
    except Exception as exc:  # an LM (a plug-in's) raised something else: this call's error, not the batch's end
        reply = error = f"Error: sub-model call failed: {type(exc).__name__}: {exc}"
    except asyncio.CancelledError:
        seconds = time.perf_counter() - started
        node.emit("subcall_end", subcall_id=sub_id, error="cancelled", usage=usage.to_dict(), seconds=seconds)
        raise
    seconds = time.perf_counter() - started
    node.emit("subcall_end", subcall_id=sub_id, reply=reply, error=error, usage=usage.to_dict(), seconds=seconds)
    return reply


def context_as_text(context: object) -> str:
    """How rlm_query at the depth limit puts a context into its plain sub-model prompt."""
    return context if isinstance(context, str) else repr(context)
