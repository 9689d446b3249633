"""Anthropic's Messages API (`POST {base}/v1/messages`) for the direct transport: what litellm's Anthropic path
sends and reads for a text conversation, without litellm's per-call machinery (about 5 ms of the model-call
loop's CPU a call, ARCHITECTURE.md "Two transports").

The request: system messages joined into `system`, consecutive turns of one role merged, empty text replaced
by litellm's placeholder (Anthropic refuses empty text blocks), `max_tokens` always set (the cap, else the
model's output limit from the price map, else litellm's 4096), `stop` as `stop_sequences`, `user` as
`metadata.user_id`; other parameters are sent as given. The reply's usage is put in OpenAI's shape as litellm
puts it: prompt tokens include the cache reads and writes Anthropic reports apart, which are priced apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from rlm_kernel.core.errors import TransientModelError
from rlm_kernel.core.lm import price_map
from rlm_kernel.core.lm.support import StreamedText, TextSink, first_line

Messages = list[dict[str, Any]]
ANTHROPIC_BASE = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
KEY_VARIABLE = "ANTHROPIC_API_KEY"
TOKEN_VARIABLE = "ANTHROPIC_AUTH_TOKEN"  # sent as a bearer token when no key is set, as litellm and the SDK do
DEFAULT_MAX_TOKENS = int(os.environ.get("DEFAULT_ANTHROPIC_CHAT_MAX_TOKENS", "4096"))
EMPTY_TEXT = "[System: Empty message content sanitised to satisfy protocol]"  # litellm's placeholder
_MESSAGES_PATH = "/v1/messages"
# The parameters this module sends as Anthropic takes them; any other (tools, response_format, reasoning_effort,
# seed, a service tier priced apart, ...) needs litellm's translation, so a run that sets one goes through litellm.
SENT_PARAMS = frozenset(("temperature", "top_p", "top_k", "stop", "user", "extra_body", "extra_headers"))


def is_anthropic(model: str) -> bool:
    return price_map.provider_prefix(model) == "anthropic"


def untranslated(params: Mapping[str, Any]) -> list[str]:
    """The parameters of a run that this module would not send as litellm sends them."""
    return sorted(set(params) - SENT_PARAMS)


def base_url(api_base: str | None) -> str:
    """The server: the api_base, else ANTHROPIC_API_BASE or ANTHROPIC_BASE_URL, else Anthropic's, as litellm."""
    return api_base or os.environ.get("ANTHROPIC_API_BASE") or os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_BASE


def url(base: str) -> str:
    base = base.rstrip("/")
    return base if base.endswith(_MESSAGES_PATH) else f"{base}{_MESSAGES_PATH}"


def bearer_token(key: str | None) -> str | None:
    """ANTHROPIC_AUTH_TOKEN, where there is no key."""
    return None if key else os.environ.get(TOKEN_VARIABLE)


def auth_headers(key: str | None, token: str | None) -> dict[str, str]:
    """The key as `x-api-key`; without one, the bearer token (`bearer_token`); with neither, nothing."""
    headers = {"anthropic-version": API_VERSION}
    if key:
        headers["x-api-key"] = key
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def body(
    model: str, messages: Messages, max_output_tokens: int | None, params: Mapping[str, Any], stream: bool
) -> dict[str, Any]:
    fields = {name: value for name, value in params.items() if name not in ("extra_body", "extra_headers")}
    stop = fields.pop("stop", None)
    if stop is not None:
        fields["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    user = fields.pop("user", None)
    if user is not None:
        fields["metadata"] = {"user_id": user}
    system, turns = _split(messages)
    request: dict[str, Any] = {**fields, **(params.get("extra_body") or {})}
    request.update(model=model.partition("/")[2], messages=turns, max_tokens=_max_tokens(model, max_output_tokens))
    if system:
        request["system"] = system
    if stream:
        request["stream"] = True
    return request


def _max_tokens(model: str, cap: int | None) -> int:
    if cap is not None:
        return cap
    found = price_map.entry(model)[1] or {}
    limit = found.get("max_output_tokens") or found.get("max_tokens")
    return int(limit) if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else DEFAULT_MAX_TOKENS


def _split(messages: Messages) -> tuple[str, Messages]:
    """The system text, and the other turns with consecutive turns of one role merged (Anthropic alternates)."""
    system: list[str] = []
    turns: Messages = []
    for message in messages:
        role, text = message.get("role", "user"), _text(message.get("content"))
        if role == "system":
            if text.strip():
                system.append(text)
            continue
        role = "assistant" if role == "assistant" else "user"
        block = {"type": "text", "text": text if text.strip() else EMPTY_TEXT}
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].append(block)
        else:
            turns.append({"role": role, "content": [block]})
    return "\n\n".join(system), turns


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: their text
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def chat_usage(usage: Any) -> dict[str, Any] | None:
    """Anthropic's usage in OpenAI's shape (support.settle_usage reads it), as litellm's calculate_usage does."""
    if not isinstance(usage, Mapping):
        return None
    read, written = _int(usage, "cache_read_input_tokens"), _int(usage, "cache_creation_input_tokens")
    return {
        "prompt_tokens": _int(usage, "input_tokens") + read + written,
        "completion_tokens": _int(usage, "output_tokens"),
        "prompt_tokens_details": {"cached_tokens": read, "cache_creation_tokens": written},
    }


def _int(record: Mapping[str, Any], name: str) -> int:
    value = record.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def read_body(raw: bytes, model: str) -> tuple[str, dict[str, Any] | None]:
    try:
        data = json.loads(raw)
        text = "".join(block["text"] for block in data["content"] if block.get("type") == "text")
        return text, chat_usage(data.get("usage"))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise TransientModelError(f"malformed reply from {model}: {type(exc).__name__}: {exc}") from None


async def read_events(content: Any, on_text: TextSink, model: str) -> tuple[str, dict[str, Any] | None]:
    """Anthropic's server-sent events: text deltas to `on_text`; the input usage from message_start, the output
    tokens from message_delta (a running total); an `error` event mid-stream is a transient failure."""
    text = StreamedText(on_text)
    usage: dict[str, Any] = {}
    async for raw_line in content:
        line = raw_line.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        try:
            event = json.loads(line[len("data:") :].strip())
            kind = event.get("type")
            if kind == "content_block_delta" and event["delta"].get("type") == "text_delta":
                text.add(event["delta"]["text"])
            elif kind == "message_start":
                usage.update(event["message"].get("usage") or {})
            elif kind == "message_delta":
                usage.update(event.get("usage") or {})
            elif kind == "error":
                detail = (event.get("error") or {}).get("message") or "error event"
                raise TransientModelError(f"{model} stream ended with an error: {first_line(str(detail))}")
            elif kind == "message_stop":
                break
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise TransientModelError(f"malformed stream from {model}: {type(exc).__name__}: {exc}") from None
    return text.text, chat_usage(usage) if usage else None
