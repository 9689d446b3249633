"""Anthropic's Messages API as `rlm serve-model` speaks it (POST .../v1/messages): requests read into the
chat messages a policy takes, replies and streams written as Anthropic writes them. It lets tests and
benchmarks drive litellm's Anthropic path (`anthropic/...` with `api_base`) against a local server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rlm_kernel.models.policies import Messages

MESSAGES_PATH_SUFFIX = "/messages"


def chat_messages(request: dict[str, Any], version: str | None) -> Messages:
    """The request's `system` and `messages` as chat messages (content blocks joined into text), refused (ValueError)
    where Anthropic refuses it: no `anthropic-version` header (`version`) or `max_tokens`, a role other than user and
    assistant, an empty text block."""
    if not version:
        raise ValueError("anthropic-version: header is required")
    max_tokens = request.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ValueError("max_tokens: Field required")
    messages: Messages = []
    system = request.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system)})
    for message in request["messages"]:
        if not isinstance(message, dict):
            raise TypeError("messages must be a list of objects")
        if message.get("role") not in ("user", "assistant"):
            raise ValueError(f"messages: Unexpected role {message.get('role')!r}: use the system parameter for system")
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        texts = [block.get("text") for block in blocks if isinstance(block, dict) and block.get("type") == "text"]
        if any(not str(text or "").strip() for text in texts):
            raise ValueError("messages: text content blocks must be non-empty")
        messages.append({"role": message["role"], "content": _text(content)})
    return messages


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(block.get("text", "")) for block in content if isinstance(block, dict))
    return ""


def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    """The chat usage (wire.usage_of) in Anthropic's words: cached input is reported apart from the rest."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return {
        "input_tokens": usage["prompt_tokens"] - cached,
        "cache_read_input_tokens": cached,
        "output_tokens": usage["completion_tokens"],
    }


def message_body(model: str, reply: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": reply}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": _usage(usage),
    }


def message_events(
    model: str, pieces: Iterable[str], usage_of_reply: Callable[[str], dict[str, Any] | None]
) -> Iterator[bytes]:
    """The reply as Anthropic streams it: message_start, a text block's deltas, message_delta, message_stop."""

    def event(kind: str, payload: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode()

    start = {**message_body(model, "", None), "content": [], "stop_reason": None}
    yield event("message_start", {"message": start})
    yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    written = []
    for piece in pieces:
        written.append(piece)
        yield event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
    yield event("content_block_stop", {"index": 0})
    usage = _usage(usage_of_reply("".join(written)))
    delta = {"stop_reason": "end_turn", "stop_sequence": None}
    yield event("message_delta", {"delta": delta, "usage": usage})
    yield event("message_stop", {})
