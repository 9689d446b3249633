"""The OpenAI chat-completions wire format as `rlm serve-model` writes it: bodies, streams, refusals."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from rlm_kernel.models.policies import Messages, count_tokens, messages_tokens

MALFORMED_BODY = b'{"id": "chatcmpl-malformed", "object": "chat.completion", "choices": ['

# The refusals `reject_status` gives, worded as OpenAI's API words them.
REJECTIONS = {
    401: ("Incorrect API key provided: {key}.", "invalid_api_key"),
    403: ("You are not allowed to use this model with key {key}.", "model_not_allowed"),
}


def usage_of(messages: Messages, reply: str, cached_fraction: float = 0.0, reasoning_tokens: int = 0) -> dict[str, Any]:
    """A reply's usage as OpenAI reports it; `cached_fraction` of the prompt reported as read from the prompt
    cache, and `reasoning_tokens` of hidden reasoning counted in the completion, as reasoning models do."""
    prompt_tokens = messages_tokens(messages)
    completion_tokens = count_tokens(reply) + reasoning_tokens
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_fraction:
        usage["prompt_tokens_details"] = {"cached_tokens": int(prompt_tokens * cached_fraction)}
    if reasoning_tokens:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return usage


def completion_body(model: str, reply: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
    }
    if usage is not None:
        completion["usage"] = usage
    return completion


_STREAM_PIECE_CHARS = 8


def sse_body(model: str, reply: str, usage: dict[str, Any] | None) -> bytes:
    """The reply as OpenAI streams it: a role chunk, content pieces, a finish chunk, a usage chunk, [DONE]."""
    pieces = [reply[i : i + _STREAM_PIECE_CHARS] for i in range(0, len(reply), _STREAM_PIECE_CHARS)]
    return b"".join(sse_events(model, pieces, lambda _: usage))


def sse_events(
    model: str, pieces: Iterable[str], usage_of_reply: Callable[[str], dict[str, Any] | None]
) -> Iterator[bytes]:
    """The stream's events one at a time, a content chunk per piece as `pieces` yields it; the usage at the end."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time())}
    head["model"] = model

    def event(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload)}\n\n".encode()

    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        return event({**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    yield chunk({"role": "assistant", "content": ""})
    written = []
    for piece in pieces:
        written.append(piece)
        yield chunk({"content": piece})
    yield chunk({}, "stop")
    usage = usage_of_reply("".join(written))
    if usage is not None:
        yield event({**head, "choices": [], "usage": usage})
    yield b"data: [DONE]\n\n"


def chunked(parts: Iterable[bytes]) -> Iterator[bytes]:
    """A body of unknown length in HTTP/1.1 chunked encoding: each part framed as it comes, then the empty last chunk."""
    for part in parts:
        yield b"%x\r\n%s\r\n" % (len(part), part)
    yield b"0\r\n\r\n"
