"""A direct LM for OpenAI-compatible servers and Anthropic's Messages API (`RLM(transport="direct")`).

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

It speaks OpenAI's chat-completions format, and Anthropic's Messages API for `anthropic/...` models
(core/lm/anthropic.py); every other provider goes through `LiteLLM`. `transport="auto"` (the default)
picks it for those models without a Router (`picks_direct`).
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from rlm_kernel.core.aio import background_loop
from rlm_kernel.core.errors import ModelError, TransientModelError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import anthropic, endpoints, price_map
from rlm_kernel.core.lm.litellm_lm import NO_KEY, OFFLINE_PROVIDERS, Completion, Messages, call_cost, count_tokens
from rlm_kernel.core.lm.price_map import NO_DETAIL, TokenDetail
from rlm_kernel.core.lm.support import (
    StreamedText,
    TextSink,
    auth_failure,
    certificate_failure,
    context_failure,
    estimate_tokens,
    first_line,
    key_hint,
    looks_like_context_length,
    per_token_prices,
    provider_key_variable,
    retry_after_seconds,
    settle_usage,
    ssl_option,
)

_session: Any = None  # one aiohttp.ClientSession, on the background loop, shared by every instance


def served_model_name(model: str) -> str:
    """The name the server knows: litellm's OpenAI-compatible provider prefix removed, as litellm removes it.

    `openai/`, `hosted_vllm/`, `lm_studio/`, `litellm_proxy/`... and every other OpenAI-compatible provider
    litellm lists; a name whose first part is no such provider (`Qwen/Qwen2.5-7B`) is sent whole.
    """
    provider, _, rest = model.partition("/")
    if rest and (
        provider == "openai"
        or provider in price_map.OPENAI_COMPATIBLE_PROVIDERS
        or provider in endpoints.PROVIDER_ENDPOINTS
        or provider in endpoints.json_providers()
    ):
        return rest
    return model


def picks_direct(model: str, api_base: str | None, router: object, params: Mapping[str, Any] | None = None) -> bool:
    """What `transport="auto"` sends straight to the server: no Router, an OpenAI-compatible or Anthropic model.

    With an api_base, OpenAI-compatible is a provider prefix litellm maps to the OpenAI format (`openai/`,
    `hosted_vllm/`, ...) or no provider prefix at all (`my-model`, `Qwen/Qwen2.5-7B`, which an OpenAI-compatible
    server serves under that name). Without one, a model whose provider's own API is OpenAI's format
    (`openai/gpt-4o-mini`, `groq/...`: endpoints.cloud_endpoint). `anthropic/...`, with or without one, is
    posted in Anthropic's format, unless the run sets parameters only litellm translates (`params`: tools, seed,
    ...). Another provider's prefix (`gemini/`, `azure/`) and the offline models go
    through litellm, which maps each provider's format.
    """
    if router is not None or model.startswith(OFFLINE_PROVIDERS):
        return False
    if anthropic.is_anthropic(model):
        return not anthropic.untranslated(params or {})
    if not api_base:
        return endpoints.cloud_endpoint(model) is not None
    provider = price_map.provider_prefix(model)
    return provider is None or provider == "openai" or provider in price_map.OPENAI_COMPATIBLE_PROVIDERS


class OpenAICompatibleLM:
    """Chat completions posted straight to an OpenAI-compatible server (an Anthropic model's to a Messages API
    server); one attempt per call.

    The server is `api_base`, else each model's provider's own (endpoints.cloud_endpoint).
    """

    def __init__(
        self,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        prices: Mapping[str, Any] | None = None,
        key_setting: str = "api_key",
        tls_verify: bool = True,
        ca_bundle: str | None = None,
    ) -> None:
        self.api_base = api_base.rstrip("/") if api_base else None
        self._endpoints: dict[str, endpoints.Endpoint] = {}
        self._api_key = api_key
        self._ssl = ssl_option(tls_verify, ca_bundle)
        self._prices = per_token_prices(prices)  # the run's own prices, ahead of litellm's map
        self.key_setting = key_setting

    def estimate_tokens(self, messages: Messages) -> int:
        return estimate_tokens(messages)

    def input_window(self, model: str) -> int | None:
        return price_map.input_window(model)

    def can_stream(self, model: str) -> bool:
        """Every call can stream (a server that cannot answers with one body, which is read as such)."""
        return True

    def price(self, model: str, input_tokens: int, output_tokens: int, detail: TokenDetail = NO_DETAIL) -> float | None:
        """US dollars from the run's `prices`, else litellm's map as litellm prices it (None: nobody prices it)."""
        return call_cost(self._prices, model, input_tokens, output_tokens, detail)

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

    def _endpoint(self, model: str) -> endpoints.Endpoint:
        """Where `model`'s calls go: the api_base, else its provider's own endpoint (resolved once per model)."""
        found = self._endpoints.get(model)
        if found is None:
            if anthropic.is_anthropic(model):
                base = anthropic.base_url(self.api_base)
                found = endpoints.Endpoint(base, (anthropic.KEY_VARIABLE,), cloud=not self.api_base, wire="anthropic")
            elif self.api_base:
                found = endpoints.Endpoint(self.api_base, (provider_key_variable(model),))
            else:
                cloud = endpoints.cloud_endpoint(model)
                if cloud is None:
                    raise ModelError(
                        f"{model} has no OpenAI-compatible API to post to: give api_base, or transport='litellm'"
                    )
                found = cloud
            self._endpoints[model] = found
        return found

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

        endpoint = self._endpoint(model)
        where = endpoint.base_url.rstrip("/")
        key = endpoint.key(self._api_key)
        if endpoint.wire == "anthropic":
            token = anthropic.bearer_token(key)
            if key is None and token is None and endpoint.cloud:
                raise auth_failure(where, None, "no API key", key_hint(model, self.key_setting))
            url, read_body, read_events = anthropic.url(where), anthropic.read_body, anthropic.read_events
            body = anthropic.body(model, messages, max_output_tokens, params, stream=on_text is not None)
            headers = {**anthropic.auth_headers(key, token), **(params.get("extra_headers") or {})}
            redact = _Redactor(key or token)
        else:
            if key is None and endpoint.cloud:
                raise auth_failure(where, None, "no API key", key_hint(model, self.key_setting))
            url, read_body, read_events = f"{where}/chat/completions", _read_body, _read_events
            body = _chat_body(model, messages, max_output_tokens, params, stream=on_text is not None)
            headers = {**endpoint.headers, **(params.get("extra_headers") or {})}
            headers["Authorization"] = f"Bearer {key or NO_KEY}"
            redact = _Redactor(key)
        started = time.perf_counter()
        try:
            async with _shared_session().post(
                url,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),  # a total deadline, not one per read
                ssl=self._ssl,
                proxy=_proxy_for(url),
            ) as response:
                if response.status != 200:
                    raw = await response.read()
                    raise self._status_error(model, where, response, raw, redact)
                if on_text is not None and response.content_type == "text/event-stream":
                    text, usage = await read_events(response.content, on_text, model)
                else:
                    text, usage = read_body(await response.read(), model)
                    if on_text is not None and text:  # the server answered a stream request with one body
                        on_text(text)
        except asyncio.TimeoutError:
            raise TransientModelError(f"Timeout: no whole reply from {where} within {timeout:g} s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise certificate_failure(where, redact(first_line(str(exc)))) from None
        except aiohttp.ClientConnectorError as exc:
            # Not str(exc): it names the host and port again ("Cannot connect to host ... [Connect call failed ...]").
            reason = os.strerror(exc.errno) if exc.errno else str(exc.os_error) or type(exc.os_error).__name__
            raise TransientModelError(redact(f"cannot connect to {where}: {reason}")) from None
        except aiohttp.ClientError as exc:
            raise TransientModelError(redact(f"{type(exc).__name__} from {where}: {exc}")) from None
        seconds = time.perf_counter() - started
        return Completion(text=text, usage=self._usage(model, messages, text, usage), model=model, seconds=seconds)

    def _usage(self, model: str, messages: Messages, text: str, usage: Any) -> Usage:
        usage = usage if isinstance(usage, dict) else {}
        return settle_usage(self.price, lambda: _count_tokens(model, messages, text), model, usage)

    def _status_error(self, model: str, where: str, response: Any, raw: bytes, redact: _Redactor) -> ModelError:
        status = response.status
        detail = redact(_error_detail(raw) or response.reason or "")
        if status in (401, 403):
            return auth_failure(where, status, detail, key_hint(model, self.key_setting))
        if status == 400 and looks_like_context_length(raw.decode("utf-8", "replace")):
            return context_failure(model, detail)
        message = f"HTTP {status} from {where}: {detail}"
        if status == 429 or status >= 500:
            return TransientModelError(message, retry_after=retry_after_seconds(response.headers))
        return ModelError(message)


def _chat_body(
    model: str, messages: Messages, max_output_tokens: int | None, params: Mapping[str, Any], stream: bool
) -> dict[str, Any]:
    """The chat-completions request, as the OpenAI client builds it: `extra_body` merged into the body (and
    `extra_headers` sent as headers, by the caller)."""
    fields = {name: value for name, value in params.items() if name not in ("extra_body", "extra_headers")}
    body: dict[str, Any] = {**fields, **(params.get("extra_body") or {})}
    body.update(model=served_model_name(model), messages=messages)
    if max_output_tokens is not None:
        body["max_tokens"] = max_output_tokens
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


class _Redactor:
    """Removes the key a call sent (given, or from the environment) from what an error shows."""

    def __init__(self, key: str | None) -> None:
        self._key = key

    def __call__(self, text: str) -> str:
        return text.replace(self._key, "[redacted]") if self._key else text


def _count_tokens(model: str, messages: Messages, text: str) -> tuple[int, int]:
    """Tokens of a call whose server reported none: litellm's count (the rare path), else the high estimate."""
    try:
        return count_tokens(model, messages, text)
    except ImportError:  # litellm is not installed: over-count rather than leave the budgets unbound
        return estimate_tokens(messages), estimate_tokens([{"content": text}])


def _error_detail(raw: bytes) -> str:
    """An error body's message (OpenAI's {"error": {"message": ...}}, Anthropic's too), else its first line."""
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


def _proxy_for(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY or ALL_PROXY names for `url`, unless NO_PROXY exempts its host, as in the OpenAI
    client and litellm; read from the environment at each call (it may change). Not aiohttp's trust_env, which
    also looks for ~/.netrc in a worker thread twice a request: about 0.5 ms of the model-call loop a call."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy is None or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def _shared_session() -> Any:
    """The keep-alive pool, made on first use (on the background loop) and closed at exit."""
    global _session
    if _session is None or _session.closed:
        import aiohttp

        # No cap on connections: the engine's semaphore is the concurrency limit. Proxies come from _proxy_for.
        _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        atexit.register(_close_session, _session)
    return _session


def _close_session(session: Any) -> None:
    if not session.closed:
        try:
            asyncio.run_coroutine_threadsafe(session.close(), background_loop()).result(timeout=2)
        except Exception:  # exiting anyway
            pass
