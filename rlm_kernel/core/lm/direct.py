"""A direct LM for OpenAI-compatible servers (`RLM(transport="direct")`).

litellm spends about 3 ms of CPU on each call (request mapping in a worker
thread, logging objects, pricing the response), all on the one event loop
that carries every sub-call. For a large `llm_query_batched` against a local
server (vLLM, llama.cpp, Ollama, `rlm serve-model`) that CPU, not the server,
sets the wall time. This LM posts `/chat/completions` itself with aiohttp
(about 0.4 ms of CPU a call) over one keep-alive connection pool that lives
on the engine's model-call loop. It never imports litellm (2.7 s and 125 MB):
prices and input windows come from litellm's map read as a file (core/lm/price_map.py);
only a server that reports no usage, or a model priced by more than its token
counts, brings litellm in, and then lazily.

It speaks only the OpenAI chat-completions wire format; every other provider
goes through `LiteLLM`. `transport="auto"` (the default) picks it for an `api_base`
without a Router and a model of an OpenAI-compatible provider or none (`picks_direct`).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import time
from collections.abc import Mapping
from typing import Any

from rlm_kernel.core.lm import price_map
from rlm_kernel.core.aio import background_loop
from rlm_kernel.core.errors import ModelError, TransientModelError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm.litellm_lm import NO_KEY, OFFLINE_PROVIDERS, Completion, Messages, count_tokens, litellm_price
from rlm_kernel.core.lm.support import (
    StreamedText,
    TextSink,
    auth_failure,
    context_failure,
    estimate_tokens,
    first_line,
    key_hint,
    looks_like_context_length,
    per_token_prices,
    resolve_api_key,
    run_price,
    settle_usage,
)

_session: Any = None  # one aiohttp.ClientSession, on the background loop, shared by every instance


def served_model_name(model: str) -> str:
    """The name the server knows: litellm's OpenAI-compatible provider prefix removed, as litellm removes it.

    `openai/`, `hosted_vllm/`, `lm_studio/`, `litellm_proxy/`... and every other OpenAI-compatible provider
    litellm lists; a name whose first part is no such provider (`Qwen/Qwen2.5-7B`) is sent whole.
    """
    provider, _, rest = model.partition("/")
    if rest and (provider == "openai" or provider in price_map.OPENAI_COMPATIBLE_PROVIDERS):
        return rest
    return model


def picks_direct(model: str, api_base: str | None, router: object) -> bool:
    """What `transport="auto"` sends straight to the server: an api_base, no Router, an OpenAI-compatible model.

    OpenAI-compatible: a provider prefix litellm maps to the OpenAI format (`openai/`, `hosted_vllm/`, ...)
    or no provider prefix at all (`my-model`, `Qwen/Qwen2.5-7B`, which an OpenAI-compatible server serves
    under that name). Another provider's prefix (`anthropic/`, `ollama/`) and the offline models go
    through litellm, which maps each provider's format.
    """
    if not api_base or router is not None or model.startswith(OFFLINE_PROVIDERS):
        return False
    provider = price_map.provider_prefix(model)
    return provider is None or provider == "openai" or provider in price_map.OPENAI_COMPATIBLE_PROVIDERS


class OpenAICompatibleLM:
    """Chat completions posted straight to an OpenAI-compatible `api_base`; one attempt per call."""

    def __init__(
        self,
        *,
        api_base: str,
        api_key: str | None = None,
        prices: Mapping[str, Any] | None = None,
        key_setting: str = "api_key",
    ) -> None:
        self.api_base = api_base.rstrip("/")
        self._api_key = api_key
        self._prices = per_token_prices(prices)  # the run's own prices, ahead of litellm's map
        self.key_setting = key_setting

    def estimate_tokens(self, messages: Messages) -> int:
        return estimate_tokens(messages)

    def input_window(self, model: str) -> int | None:
        return price_map.input_window(model)

    def price(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """US dollars from the run's `prices`, else litellm's map as litellm prices it (None: nobody prices it)."""
        own = run_price(self._prices, model, input_tokens, output_tokens)
        if own is not None:
            return own
        if price_map.needs_litellm(model):
            return litellm_price(model, input_tokens, output_tokens)
        return price_map.cost(model, input_tokens, output_tokens)

    async def acomplete(
        self,
        messages: Messages,
        *,
        model: str,
        max_output_tokens: int | None = None,
        timeout: float = 120.0,
        params: Mapping[str, Any] | None = None,
        on_text: TextSink | None = None,
    ) -> Completion:
        """One attempt; raises TransientModelError (429, 5xx, timeouts, garbled replies) or ModelError."""
        call = self._post(messages, model, max_output_tokens, timeout, params or {}, on_text)
        loop = background_loop()
        if asyncio.get_running_loop() is loop:
            return await call
        # Called from another loop: the pool lives on the engine's loop; cancelling here cancels there.
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, loop))

    async def _post(
        self,
        messages: Messages,
        model: str,
        max_output_tokens: int | None,
        timeout: float,
        params: Mapping[str, Any],
        on_text: TextSink | None,
    ) -> Completion:
        import aiohttp

        body: dict[str, Any] = {**params, "model": served_model_name(model), "messages": messages}
        if max_output_tokens is not None:
            body["max_tokens"] = max_output_tokens
        if on_text is not None:
            body.update(stream=True, stream_options={"include_usage": True})
        headers = {"Authorization": f"Bearer {resolve_api_key(model, self._api_key) or NO_KEY}"}
        started = time.perf_counter()
        try:
            async with _shared_session().post(
                f"{self.api_base}/chat/completions",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),  # a total deadline, not one per read
            ) as response:
                if response.status != 200:
                    raise self._status_error(model, response.status, response.reason, await response.read())
                if on_text is not None and response.content_type == "text/event-stream":
                    text, usage = await _read_events(response.content, on_text, model)
                else:
                    text, usage = _read_body(await response.read(), model)
                    if on_text is not None and text:  # the server answered a stream request with one body
                        on_text(text)
        except asyncio.TimeoutError:
            raise TransientModelError(f"Timeout: no whole reply from {self.api_base} within {timeout:g} s") from None
        except aiohttp.ClientConnectorError as exc:
            raise TransientModelError(self._redact(f"cannot connect to {self.api_base}: {exc}")) from None
        except aiohttp.ClientError as exc:
            raise TransientModelError(self._redact(f"{type(exc).__name__} from {self.api_base}: {exc}")) from None
        seconds = time.perf_counter() - started
        return Completion(text=text, usage=self._usage(model, messages, text, usage), model=model, seconds=seconds)

    def _usage(self, model: str, messages: Messages, text: str, usage: Any) -> Usage:
        usage = usage if isinstance(usage, dict) else {}
        return settle_usage(
            self.price,
            lambda: _count_tokens(model, messages, text),
            model,
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
        )

    def _status_error(self, model: str, status: int, reason: str | None, raw: bytes) -> ModelError:
        detail = self._redact(_error_detail(raw) or reason or "")
        if status in (401, 403):
            return auth_failure(self.api_base, status, detail, key_hint(model, self.key_setting))
        if status == 400 and looks_like_context_length(raw.decode("utf-8", "replace")):
            return context_failure(model, detail)
        message = f"HTTP {status} from {self.api_base}: {detail}"
        return TransientModelError(message) if status == 429 or status >= 500 else ModelError(message)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


def _count_tokens(model: str, messages: Messages, text: str) -> tuple[int, int]:
    """Tokens of a call whose server reported none: litellm's count (the rare path), else the high estimate."""
    try:
        return count_tokens(model, messages, text)
    except ImportError:  # litellm is not installed: over-count rather than leave the budgets unbound
        return estimate_tokens(messages), estimate_tokens([{"content": text}])


def _error_detail(raw: bytes) -> str:
    """An error body's message (OpenAI's {"error": {"message": ...}}), else its first line."""
    text = raw.decode("utf-8", "replace")
    try:
        message = json.loads(text)["error"]["message"]
        if isinstance(message, str):
            return first_line(message)
    except (json.JSONDecodeError, KeyError, TypeError):
        pass
    return first_line(text)


def _read_body(raw: bytes, model: str) -> tuple[str, Any]:
    try:
        data = json.loads(raw)
        return data["choices"][0]["message"]["content"] or "", data.get("usage")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
        raise TransientModelError(f"malformed reply from {model}: {type(exc).__name__}: {exc}") from None


async def _read_events(content: Any, on_text: TextSink, model: str) -> tuple[str, Any]:
    """Server-sent events: each `data:` chunk's text to `on_text`; the usage from the chunk that carries it."""
    text, usage = StreamedText(on_text), None
    async for raw_line in content:
        line = raw_line.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            break
        try:
            chunk = json.loads(data)
            for choice in chunk.get("choices") or []:
                text.add((choice.get("delta") or {}).get("content"))
        except (json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise TransientModelError(f"malformed stream from {model}: {type(exc).__name__}: {exc}") from None
        usage = chunk.get("usage") or usage
    return text.text, usage


def _shared_session() -> Any:
    """The keep-alive pool, made on first use (on the background loop) and closed at exit."""
    global _session
    if _session is None or _session.closed:
        import aiohttp

        # No cap on connections: the engine's semaphore is the concurrency limit.
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        atexit.register(_close_session, _session)
    return _session


def _close_session(session: Any) -> None:
    if not session.closed:
        try:
            asyncio.run_coroutine_threadsafe(session.close(), background_loop()).result(timeout=2)
        except Exception:  # exiting anyway
            pass
