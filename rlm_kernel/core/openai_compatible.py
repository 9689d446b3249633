"""A direct LM for OpenAI-compatible servers (`RLM(transport="direct")`).

litellm spends about 3 ms of CPU on each call (request mapping in a worker
thread, logging objects, pricing the response), all on the one event loop
that carries every sub-call. For a large `llm_query_batched` against a local
server (vLLM, llama.cpp, Ollama, `rlm serve-model`) that CPU, not the server,
sets the wall time. This LM posts `/chat/completions` itself with aiohttp
(about 0.4 ms of CPU a call) over one keep-alive connection pool that lives
on the engine's model-call loop. Prices still come from litellm's map.

It speaks only the OpenAI chat-completions wire format; every other provider
goes through `LiteLLM`.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import time
from collections.abc import Mapping
from typing import Any

from rlm_kernel.core.aio import background_loop
from rlm_kernel.core.errors import ModelError, TransientModelError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import NO_KEY, Completion, LiteLLM, Messages, count_tokens, estimate_tokens, resolve_api_key

_MODEL_PREFIX = "openai/"
_session: Any = None  # one aiohttp.ClientSession, on the background loop, shared by every instance


class OpenAICompatibleLM:
    """Chat completions posted straight to an OpenAI-compatible `api_base`; one attempt per call."""

    def __init__(self, *, api_base: str, api_key: str | None = None) -> None:
        self.api_base = api_base.rstrip("/")
        self._api_key = api_key
        self._pricing = LiteLLM()

    def estimate_tokens(self, messages: Messages) -> int:
        return estimate_tokens(messages)

    def price(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        return self._pricing.price(model, input_tokens, output_tokens)

    async def acomplete(
        self,
        messages: Messages,
        *,
        model: str,
        max_output_tokens: int | None = None,
        timeout: float = 120.0,
        params: Mapping[str, Any] | None = None,
    ) -> Completion:
        """One attempt; raises TransientModelError (429, 5xx, timeouts, garbled replies) or ModelError."""
        call = self._post(messages, model, max_output_tokens, timeout, params or {})
        loop = background_loop()
        if asyncio.get_running_loop() is loop:
            return await call
        # Called from another loop: the pool lives on the engine's loop; cancelling here cancels there.
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call, loop))

    async def _post(
        self, messages: Messages, model: str, max_output_tokens: int | None, timeout: float, params: Mapping[str, Any]
    ) -> Completion:
        import aiohttp

        body: dict[str, Any] = {**params, "model": model.removeprefix(_MODEL_PREFIX), "messages": messages}
        if max_output_tokens is not None:
            body["max_tokens"] = max_output_tokens
        headers = {"Authorization": f"Bearer {resolve_api_key(model, self._api_key) or NO_KEY}"}
        started = time.perf_counter()
        try:
            async with _shared_session().post(
                f"{self.api_base}/chat/completions",
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                status, reason, raw = response.status, response.reason, await response.read()
        except asyncio.TimeoutError:
            raise TransientModelError(f"Timeout: no reply from {self.api_base} within {timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise TransientModelError(self._redact(f"{type(exc).__name__}: {exc}")) from None
        seconds = time.perf_counter() - started
        if status != 200:
            raise self._status_error(status, reason, raw)
        try:
            data = json.loads(raw)
            text = data["choices"][0]["message"]["content"] or ""
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
            raise TransientModelError(f"malformed reply from {model}: {type(exc).__name__}: {exc}") from None
        return Completion(
            text=text, usage=self._usage(model, messages, text, data.get("usage")), model=model, seconds=seconds
        )

    def _usage(self, model: str, messages: Messages, text: str, usage: Any) -> Usage:
        usage = usage if isinstance(usage, dict) else {}
        input_tokens, output_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(input_tokens, int) or not isinstance(output_tokens, int):
            input_tokens, output_tokens = count_tokens(model, messages, text)
        cost = self.price(model, input_tokens, output_tokens)
        return Usage(
            llm_calls=1,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost or 0.0,
            cost_known=cost is not None,
        )

    def _status_error(self, status: int, reason: str | None, raw: bytes) -> ModelError:
        text = raw.decode("utf-8", "replace").strip()
        detail = text.splitlines()[0][:500] if text else (reason or "")
        message = self._redact(f"HTTP {status} from {self.api_base}: {detail}")
        return TransientModelError(message) if status == 429 or status >= 500 else ModelError(message)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


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
