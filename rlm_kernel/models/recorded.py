"""The `replay/<session>` litellm provider: serves the model replies recorded in a trace.

A replayed run asks what the recorded run asked (same prompts, same code, same outputs),
so each request is looked up by its content, never by its order across threads:
- an RLM call (its first message is the system prompt) by its conversation: the first user
  message (question and context metadata, never the context) and the assistant replies so
  far. Twin conversations (identical children) share one queue of replies.
- a plain sub-model call (one user message) by the sha256 of its prompt, one queue per prompt.
The recorded token counts are reported, so a replayed run counts the same tokens.

`replay_rlm(trace)` builds an RLM set up as the recorded run was (its settings are read from
the recorded system prompt) whose every model call goes to a new replay session.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rlm_kernel.core.errors import ReplayError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.legacy import without_line_count
from rlm_kernel.core.lm import Completion, LiteLLM, Messages
from rlm_kernel.core.trace import Event, Trace, prompt_sha256

PROVIDER = "replay"
PREVIEW_CHARS = 80

_books: dict[str, ReplayBook] = {}
_books_lock = threading.Lock()
_session_ids = itertools.count(1)


@dataclass(frozen=True)
class Recorded:
    reply: str
    input_tokens: int
    output_tokens: int


def _recorded(reply: str, usage: dict[str, Any]) -> Recorded:
    return Recorded(reply, int(usage["input_tokens"]), int(usage["output_tokens"]))


def conversation_key(first_user_message: str, assistant_replies: list[str]) -> str:
    first = without_line_count(first_user_message)
    return prompt_sha256(json.dumps([first, *assistant_replies], ensure_ascii=False))


class ReplayBook:
    """The recorded replies of one run, keyed by what each request asks (thread-safe)."""

    def __init__(self, events: list[Event]) -> None:
        self._turns: dict[str, deque[Recorded]] = defaultdict(deque)
        self._prompts: dict[str, deque[Recorded]] = defaultdict(deque)
        self._lock = threading.Lock()
        conversations: dict[str, list[str]] = {}  # node id -> first user message, then its replies as kept
        llm_prompts: dict[str, str] = {}  # sub-call id -> sha256 of its prompt
        for event in events:
            d = event.data
            if event.kind == "call_start":
                conversations[event.node_id] = [d["user_prompt"]]
            elif event.kind == "iteration":
                turn = conversations[event.node_id]
                self._turns[conversation_key(turn[0], turn[1:])].append(_recorded(d["reply"], d["usage"]))
                turn.append(d["reply"] if d.get("kept") is None else d["kept"])
            elif event.kind == "subcall_start" and d["kind"] == "llm":
                llm_prompts[d["subcall_id"]] = d["prompt_sha256"]
            elif event.kind == "subcall_end" and d["subcall_id"] in llm_prompts:
                sha = llm_prompts.pop(d["subcall_id"])
                if d.get("error") is None:  # a failed or refused call has no reply to serve
                    self._prompts[sha].append(_recorded(d["reply"], d["usage"]))

    def reply(self, messages: Messages) -> Recorded:
        if messages and messages[0].get("role") == "system":
            first = str(messages[1]["content"])
            replies = [str(m["content"]) for m in messages if m.get("role") == "assistant"]
            queue = self._turns.get(conversation_key(first, replies))
            what = f"RLM call {len(replies) + 1} of the conversation that starts {_preview(first)}"
        else:
            prompt = str(messages[-1]["content"])
            queue = self._prompts.get(prompt_sha256(prompt))
            what = f"the sub-model prompt {_preview(prompt)}"
        with self._lock:
            if not queue:
                raise ReplayError(f"replay has no recorded reply for {what}")
            return queue.popleft()


def _preview(text: str) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…")


def register_replay(trace: Trace) -> str:
    """A new replay session of `trace`'s recorded replies; returns its litellm model name."""
    name = f"session-{next(_session_ids)}"
    book = ReplayBook(trace.events)
    with _books_lock:
        _books[name] = book
    return f"{PROVIDER}/{name}"


def respond(model: str, messages: Messages, kwargs: dict[str, Any]) -> tuple[str, int, int]:
    """The provider's answer to one request: the recorded reply and its recorded token counts."""
    name = model.removeprefix(f"{PROVIDER}/")
    with _books_lock:
        book = _books.get(name)
    if book is None:
        raise ReplayError(f"no replay session named {name!r}")
    recorded = book.reply(messages)
    return recorded.reply, recorded.input_tokens, recorded.output_tokens


class ReplayLM:
    """The LM of a replayed run: every call, whatever model it names, is answered by one replay session.

    The run keeps the recorded model names, so its prompts and trace read as the original's,
    and a reply is priced as the recorded model's (litellm's local price map), as the original was.
    """

    def __init__(self, session_model: str) -> None:
        self.session_model = session_model
        self._lm = LiteLLM()

    def estimate_tokens(self, messages: Messages) -> int:
        return self._lm.estimate_tokens(messages)

    def price(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        return self._lm.price(model, input_tokens, output_tokens)

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
        # The recorded reply was already cut to its cap, if any, and sampled with the recorded parameters.
        served = await self._lm.acomplete(messages, model=self.session_model, timeout=timeout, on_text=on_text)
        u = served.usage
        cost = self.price(model, u.input_tokens, u.output_tokens)
        usage = Usage(
            llm_calls=1,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cost_usd=cost or 0.0,
            cost_known=cost is not None,
        )
        return Completion(served.text, usage, model, served.seconds)
