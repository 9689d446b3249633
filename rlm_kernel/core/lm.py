"""The LM layer: one implementation, over litellm, for every provider.

litellm is imported on the first call only (it takes seconds), with the
environment set so that importing and counting tokens never reach the network.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rlm_kernel.core.aio import CancelScope
from rlm_kernel.core.errors import ModelError, TransientModelError
from rlm_kernel.core.ledger import Usage

Messages = list[dict[str, Any]]
OFFLINE_PROVIDERS = ("scripted/", "replay/")
NO_KEY = "sk-no-key-required"  # what a server that wants some key gets when no key is configured anywhere

_litellm: Any = None
_import_lock = threading.Lock()
_setups: list[Callable[[Any], None]] = []


def on_litellm_import(setup: Callable[[Any], None]) -> None:
    """Run `setup(litellm)` once litellm is imported (at once if it already is): how providers plug in."""
    with _import_lock:
        _setups.append(setup)
        if _litellm is not None:
            setup(_litellm)


def import_litellm() -> Any:
    """litellm, imported once, offline-safe, with the registered providers set up."""
    global _litellm
    with _import_lock:
        if _litellm is None:
            # Without these, import fetches the cost map and token counting may download a tokenizer.
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import litellm

            litellm.suppress_debug_info = True
            litellm.telemetry = False
            for setup in _setups:
                setup(litellm)
            _litellm = litellm
        return _litellm


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage
    model: str
    seconds: float


class LM(Protocol):
    """What the engine needs from a model provider."""

    async def acomplete(
        self,
        messages: Messages,
        *,
        model: str,
        max_output_tokens: int | None,
        timeout: float,
        params: Mapping[str, Any] | None = None,
    ) -> Completion:
        """One attempt; `params`: sampling and provider parameters (temperature, top_p, seed, ...)."""
        ...

    def estimate_tokens(self, messages: Messages) -> int: ...

    def price(self, model: str, input_tokens: int, output_tokens: int) -> float | None: ...


def provider_key_variable(model: str) -> str:
    """The environment variable a provider's key usually lives in: OPENAI_API_KEY for openai/..., and so on."""
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    return f"{provider.upper().replace('-', '_')}_API_KEY"


def resolve_api_key(model: str, api_key: str | None) -> str | None:
    """The key to send: the one given, else the provider's usual environment variable; None when neither is set."""
    return api_key or os.environ.get(provider_key_variable(model)) or None


def estimate_tokens(messages: Messages) -> int:
    """A deliberately high token estimate (3 chars a token) used to reserve budget before a call."""
    return sum(math.ceil(len(str(m.get("content") or "")) / 3) + 8 for m in messages)


def count_tokens(model: str, messages: Messages, text: str) -> tuple[int, int]:
    """Input and output tokens counted with litellm: some local servers omit usage, and zero would be wrong."""
    litellm = import_litellm()
    return litellm.token_counter(model=model, messages=messages), litellm.token_counter(model=model, text=text)


class LiteLLM:
    """Chat completions through litellm: any provider, or a local OpenAI-compatible server.

    Each call is one attempt (litellm's and the OpenAI client's own retries are
    off) so that the engine retries, and charges every attempt to the ledger.
    """

    def __init__(
        self,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        router: list[dict[str, Any]] | None = None,
    ) -> None:
        self.api_base = api_base
        self._api_key = api_key
        self._router_config = router
        self._router: Any = None
        self._unpriced: set[str] = set()  # litellm's miss for a model costs about 1 ms: learn it once

    def estimate_tokens(self, messages: Messages) -> int:
        return estimate_tokens(messages)

    def price(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """US dollars from litellm's price map; offline models cost 0 unless a price is registered for them."""
        if model not in self._unpriced:
            litellm = import_litellm()
            try:
                prompt_cost, completion_cost = litellm.cost_per_token(
                    model=model, prompt_tokens=input_tokens, completion_tokens=output_tokens
                )
                return float(prompt_cost + completion_cost)
            except Exception:  # litellm raises various errors for unmapped models
                self._unpriced.add(model)
        return 0.0 if model.startswith(OFFLINE_PROVIDERS) else None

    def complete(
        self,
        messages: Messages,
        *,
        model: str,
        max_output_tokens: int | None = None,
        timeout: float = 120.0,
        params: Mapping[str, Any] | None = None,
    ) -> Completion:
        """The synchronous form of `acomplete`, interruptible with Ctrl-C."""
        call = self.acomplete(
            messages, model=model, max_output_tokens=max_output_tokens, timeout=timeout, params=params
        )
        return CancelScope().run(call)

    async def acomplete(
        self,
        messages: Messages,
        *,
        model: str,
        max_output_tokens: int | None = None,
        timeout: float = 120.0,
        params: Mapping[str, Any] | None = None,
    ) -> Completion:
        """One attempt at a chat completion; raises TransientModelError or ModelError."""
        litellm = import_litellm()
        kwargs: dict[str, Any] = {**(params or {}), "messages": messages, "timeout": timeout, "num_retries": 0}
        if max_output_tokens is not None:
            kwargs["max_tokens"] = max_output_tokens
        started = time.perf_counter()
        try:
            if self._router_config is not None:
                response = await self._get_router(litellm).acompletion(model=model, **kwargs)
            else:
                if self.api_base:
                    kwargs["api_base"] = self.api_base
                    # OpenAI-compatible servers want some key: the configured one, else a placeholder.
                    kwargs["api_key"] = resolve_api_key(model, self._api_key) or NO_KEY
                elif self._api_key:
                    kwargs["api_key"] = self._api_key
                if not model.startswith(OFFLINE_PROVIDERS):
                    kwargs["max_retries"] = 0
                response = await litellm.acompletion(model=model, **kwargs)
        except Exception as exc:
            raise classify_error(litellm, exc, self._api_key) from None
        seconds = time.perf_counter() - started
        try:
            text = response.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError) as exc:
            raise TransientModelError(f"malformed reply from {model}: {exc}") from None
        return Completion(
            text=text, usage=self._usage(litellm, model, messages, text, response), model=model, seconds=seconds
        )

    def _usage(self, litellm: Any, model: str, messages: Messages, text: str, response: Any) -> Usage:
        usage = getattr(response, "usage", None)
        input_tokens = getattr(usage, "prompt_tokens", None)
        output_tokens = getattr(usage, "completion_tokens", None)
        if input_tokens is None or output_tokens is None:
            input_tokens, output_tokens = count_tokens(model, messages, text)
        # litellm prices every response as it returns it; pricing it again costs about 1 ms of CPU a call.
        cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
        if cost is None and model.startswith(OFFLINE_PROVIDERS):
            cost = 0.0
        return Usage(
            llm_calls=1,
            input_tokens=int(input_tokens),
            output_tokens=int(output_tokens),
            cost_usd=float(cost or 0.0),
            cost_known=cost is not None,
        )

    def _get_router(self, litellm: Any) -> Any:
        if self._router is None:
            known = set(litellm.model_cost)
            self._router = litellm.Router(model_list=self._router_config, num_retries=0)
            # The Router registers each deployment's model in litellm's process-wide price map, with no
            # price when it has none: every later call to that model would then cost $0, not "unknown".
            deployed = {d.get("litellm_params", {}).get("model") for d in self._router_config or []}
            for name in (set(litellm.model_cost) - known) & deployed:
                entry = litellm.model_cost[name]
                if entry.get("input_cost_per_token") is None and entry.get("output_cost_per_token") is None:
                    del litellm.model_cost[name]
        return self._router


_TRANSIENT_NAMES = {
    "RateLimitError",
    "Timeout",
    "APITimeoutError",
    "APIConnectionError",
    "InternalServerError",
    "ServiceUnavailableError",
    "BadGatewayError",
    "JSONDecodeError",
}


def classify_error(litellm: Any, exc: BaseException, api_key: str | None) -> ModelError:
    """A one-line ModelError, transient when a retry may succeed; the API key never appears."""
    status = getattr(exc, "status_code", None)
    transient = (
        type(exc).__name__ in _TRANSIENT_NAMES
        or isinstance(exc, (TimeoutError, json.JSONDecodeError, ConnectionError))
        or (isinstance(status, int) and (status == 429 or status >= 500))
        or (isinstance(exc, litellm.APIError) and status is None)
    )
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if api_key:
        detail = detail.replace(api_key, "[redacted]")
    message = f"{type(exc).__name__}: {detail[:500]}"
    return TransientModelError(message) if transient else ModelError(message)
