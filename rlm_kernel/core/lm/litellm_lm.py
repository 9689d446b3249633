"""The LM layer over litellm, for every provider; OpenAI-compatible servers also have a direct one
(core/lm/direct.py), the default for them (ARCHITECTURE.md, "Two transports").

litellm is imported on the first call only (it takes seconds), with the
environment set so that importing and counting tokens never reach the network.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from rlm_kernel.core.aio import CancelScope
from rlm_kernel.core.errors import TransientModelError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import price_map
from rlm_kernel.core.lm.price_map import NO_DETAIL, TokenDetail
from rlm_kernel.core.lm.support import (
    PriceFn,
    StreamedText,
    TextSink,
    classify_error,
    estimate_tokens,
    litellm_ssl_verify,
    per_token_prices,
    resolve_api_key,
    run_price,
    settle_usage,
)

Messages = list[dict[str, Any]]
OFFLINE_PROVIDERS = ("scripted/", "replay/")
LITELLM_UNAWAITED = r"coroutine '[\w.<>]*\.acompletion' was never awaited"
# A call cancelled (an interrupt, a spent budget) while litellm prepares it in a worker thread leaves litellm's
# provider coroutine unawaited; nothing was sent, so its RuntimeWarning says nothing to the user. Set here, at
# import, not when litellm is imported: a filter added inside a `catch_warnings` block (a test) would not last.
warnings.filterwarnings("ignore", LITELLM_UNAWAITED, RuntimeWarning)
NO_KEY = "sk-no-key-required"  # what a server that wants some key gets when no key is configured anywhere

_litellm: Any = None
_import_lock = threading.Lock()
_setups: list[Callable[[Any], None]] = []
_import_started = False


def on_litellm_import(setup: Callable[[Any], None]) -> None:
    """Run `setup(litellm)` once litellm is imported (at once if it already is): how providers plug in."""
    with _import_lock:
        _setups.append(setup)
        if _litellm is not None:
            setup(_litellm)


def _drop_logging_worker_errors(record: logging.LogRecord) -> bool:
    """litellm's exit-time flush of its own logging queue races its worker (a coroutine awaited twice) and
    prints a traceback after about half the runs on a busy machine; this project gives litellm no callbacks
    to log to, so those records say nothing to the user."""
    return not str(record.msg).startswith("LoggingWorker error")


# What litellm's first HTTP chat call imports (seconds on a small machine): the OpenAI client's resources, proxy types.
_FIRST_CALL_IMPORTS = ("openai.resources", "litellm.proxy._types", "litellm.llms.litellm_proxy.chat.transformation")


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
            logging.getLogger("LiteLLM").addFilter(_drop_logging_worker_errors)
            for setup in _setups:
                setup(litellm)
            _litellm = litellm
        return _litellm


def chat_models_with_keys() -> dict[str, list[str]]:
    """The chat models litellm's price map knows, by provider, for the providers whose keys are in the environment,
    named as `--model` takes them (`openai/gpt-4o-mini`); no request is made."""
    litellm = import_litellm()
    by_provider: dict[str, list[str]] = {}
    for name in litellm.utils.get_valid_models():
        info = litellm.model_cost.get(name) or {}
        provider = info.get("litellm_provider")
        if info.get("mode") != "chat" or not provider:  # image, audio, embedding models: not for an RLM
            continue
        by_provider.setdefault(provider, []).append(name if name.startswith(f"{provider}/") else f"{provider}/{name}")
    return {provider: sorted(set(models)) for provider, models in sorted(by_provider.items())}


def import_litellm_soon() -> None:
    """Start importing litellm on a daemon thread, once: a run that will call through litellm overlaps the
    import (about 2.7 s) with the rest of its set-up, and its first call waits on the import lock for that
    import rather than paying a second one."""
    global _import_started
    with _import_lock:
        if _litellm is not None or _import_started:
            return
        _import_started = True
    threading.Thread(target=_import_quietly, name="litellm-import", daemon=True).start()


def _import_quietly() -> None:
    try:
        import_litellm()
    except Exception:  # not installed, or broken: the first call imports again and reports it
        pass


@dataclass(frozen=True)
class Completion:
    text: str
    usage: Usage
    model: str
    seconds: float


class LM(Protocol):
    """What the engine needs from a model provider (`input_window(model)`, when it has one, feeds the sub-call guard;
    `can_stream(model)`, when true, has budgeted calls stream, so that a reply past its cap can be ended)."""

    async def acomplete(
        self,
        messages: Messages,
        *,
        model: str,
        max_output_tokens: int | None,
        timeout: float,
        params: Mapping[str, Any] | None = None,
        on_text: TextSink | None = None,
    ) -> Completion:
        """One attempt; `params`: sampling and provider parameters (temperature, top_p, seed, ...).

        With `on_text` the reply streams and each piece of text is passed to it as it arrives;
        the Completion still holds the whole reply and its exact usage.
        """
        ...

    def estimate_tokens(self, messages: Messages) -> int: ...

    def price(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        """US dollars for a call (None: unpriced); the LMs here also take `detail=` (cached and reasoning tokens)."""
        ...


def count_tokens(model: str, messages: Messages, text: str) -> tuple[int, int]:
    """Input and output tokens counted with litellm: some local servers omit usage, and zero would be wrong."""
    litellm = import_litellm()
    return litellm.token_counter(model=model, messages=messages), litellm.token_counter(model=model, text=text)


def litellm_price(model: str, input_tokens: int, output_tokens: int, detail: TokenDetail = NO_DETAIL) -> float | None:
    """US dollars as litellm's cost_per_token gives them; None when litellm cannot price the model (or is missing)."""
    try:
        litellm = import_litellm()
        usage = None
        if detail != NO_DETAIL:
            usage = litellm.Usage(
                prompt_tokens=input_tokens,
                completion_tokens=output_tokens,
                total_tokens=input_tokens + output_tokens,
                prompt_tokens_details={
                    "cached_tokens": detail.cached_input,
                    "cache_creation_tokens": detail.cache_write,
                },
                completion_tokens_details={"reasoning_tokens": detail.reasoning},
            )
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=input_tokens, completion_tokens=output_tokens, usage_object=usage
        )
    except Exception:  # litellm not installed, or one of the various errors it raises for unmapped models
        return None
    return float(prompt_cost + completion_cost)


def call_cost(
    prices: Mapping[str, tuple[float, float]],
    model: str,
    input_tokens: int,
    output_tokens: int,
    detail: TokenDetail = NO_DETAIL,
) -> float | None:
    """One call's US dollars, the same on both transports, streamed or not (None: nobody prices the model).

    The run's own `prices` first; then litellm's map read here for OpenAI-compatible providers (so the direct
    path never imports litellm for it), with cached input, cache writes and reasoning priced as litellm prices
    them; every other model the map knows, and the few whose price depends on more than tokens, by litellm.
    """
    own = run_price(prices, model, input_tokens, output_tokens)
    if own is not None:
        return own
    if price_map.prices_itself(model):
        return price_map.cost(model, input_tokens, output_tokens, detail)
    if price_map.entry(model)[1] is not None or model in price_map.price_map():
        return litellm_price(model, input_tokens, output_tokens, detail)
    return None


def input_window(model: str) -> int | None:
    """The input tokens litellm's model map gives `model` (None when it does not know the model)."""
    if model.startswith(OFFLINE_PROVIDERS):
        return None
    try:
        info = import_litellm().get_model_info(model)
    except Exception:  # litellm raises various errors for unmapped models
        return None
    window = info.get("max_input_tokens") or info.get("max_tokens")
    return int(window) if isinstance(window, (int, float)) and window > 0 else None


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
        prices: Mapping[str, Any] | None = None,
        key_setting: str = "api_key",
        tls_verify: bool = True,
        ca_bundle: str | None = None,
    ) -> None:
        self.api_base = api_base
        self._ssl_verify = litellm_ssl_verify(tls_verify, ca_bundle)
        self._api_key = api_key
        self._router_config = router
        self._router: Any = None
        self._unpriced: set[str] = set()  # litellm's miss for a model costs about 1 ms: learn it once
        self._prices = per_token_prices(prices)  # the run's own prices, ahead of litellm's map
        self.key_setting = key_setting  # which setting an auth error tells the user to set
        import_litellm()  # here, not in a run's first call: its seconds are not the run's time budget
        if api_base is not None or router is not None:  # HTTP calls: what their first one imports, too
            for name in _FIRST_CALL_IMPORTS:
                try:
                    importlib.import_module(name)
                except ImportError:  # another litellm or openai version: the first call imports what it needs
                    pass

    def estimate_tokens(self, messages: Messages) -> int:
        return estimate_tokens(messages)

    def input_window(self, model: str) -> int | None:
        return input_window(model)

    def can_stream(self, model: str) -> bool:
        """False: budgeted calls on litellm are not streamed to be cut at their cap. litellm's streamed usage drops
        the cached-token details (a cost budget would bind early) and fills in usage a server left out (so it would
        not be marked as counted here); the overshoot of a server that ignores max_tokens is reserved instead."""
        return False

    def price(self, model: str, input_tokens: int, output_tokens: int, detail: TokenDetail = NO_DETAIL) -> float | None:
        """US dollars by call_cost, else by litellm's own rules (a Router's or a registered provider's model);
        offline models cost 0 unless priced."""
        cost = call_cost(self._prices, model, input_tokens, output_tokens, detail)
        if cost is None and model not in self._unpriced:
            cost = litellm_price(model, input_tokens, output_tokens, detail)
            if cost is None:
                self._unpriced.add(model)
        if cost is None and model.startswith(OFFLINE_PROVIDERS):
            return 0.0
        return cost

    def complete(
        self,
        messages: Messages,
        *,
        model: str,
        max_output_tokens: int | None = None,
        timeout: float = 120.0,
        params: Mapping[str, Any] | None = None,
        on_text: TextSink | None = None,
    ) -> Completion:
        """The synchronous form of `acomplete`, interruptible with Ctrl-C."""
        call = self.acomplete(
            messages, model=model, max_output_tokens=max_output_tokens, timeout=timeout, params=params, on_text=on_text
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
        on_text: TextSink | None = None,
    ) -> Completion:
        """One attempt at a chat completion; raises TransientModelError or ModelError."""
        litellm = import_litellm()
        kwargs: dict[str, Any] = {**(params or {}), "messages": messages, "timeout": timeout, "num_retries": 0}
        if max_output_tokens is not None:
            kwargs["max_tokens"] = max_output_tokens
        if on_text is not None:
            kwargs.update(stream=True, stream_options={"include_usage": True})
        if kwargs.get("tools"):
            # With `tools`, litellm imports its proxy's MCP bridge (and the optional `mcp` package) to look for
            # MCP servers among them; this project's tools are plain function tools, so that step is skipped.
            kwargs["_skip_mcp_handler"] = True
        started = time.perf_counter()
        try:
            send = self._get_router(litellm).acompletion if self._router_config is not None else litellm.acompletion
            if self._router_config is None:
                if self.api_base:
                    kwargs["api_base"] = self.api_base
                    # OpenAI-compatible servers want some key: the configured one, else a placeholder.
                    kwargs["api_key"] = resolve_api_key(model, self._api_key) or NO_KEY
                elif self._api_key:
                    kwargs["api_key"] = self._api_key
                if not model.startswith(OFFLINE_PROVIDERS):
                    kwargs["max_retries"] = 0
                    # Per call where litellm's own HTTP client reads it; the OpenAI SDK clients it makes read only
                    # its process-wide setting, so that is set too, each call (litellm has no narrower one).
                    kwargs["ssl_verify"] = litellm.ssl_verify = self._ssl_verify
            response = await send(model=model, **kwargs)
            cost = None
            if on_text is not None and not hasattr(response, "choices"):
                text, usage = await _read_stream(response, on_text)
                if text == "" and usage is None:
                    # A server that answers a stream request with one JSON body streams nothing through
                    # litellm (the body is not server-sent events): ask again without streaming.
                    del kwargs["stream"], kwargs["stream_options"]
                    text, usage, cost = _read_response(await send(model=model, **kwargs), model)
                    on_text(text)
            else:
                text, usage, cost = _read_response(response, model)
                if on_text is not None and text:  # the server answered a stream request with one body
                    on_text(text)
        except TransientModelError:
            raise
        except Exception as exc:
            raise self._classified(litellm, exc, model) from None
        seconds = time.perf_counter() - started
        return Completion(
            text=text,
            usage=settle_usage(self._pricer(model, cost), lambda: count_tokens(model, messages, text), model, usage),
            model=model,
            seconds=seconds,
        )

    def _pricer(self, model: str, litellm_cost: float | None) -> PriceFn:
        """call_cost (self.price); but where it would ask litellm.cost_per_token, the cost litellm already put on
        the reply by that same function (pricing a reply twice is about 1 ms of the loop's CPU a call)."""
        if litellm_cost is None or model in self._prices or price_map.prices_itself(model):
            return self.price
        if price_map.entry(model)[1] is None and model not in price_map.price_map():
            return self.price  # a model litellm's map lacks: litellm's 0.0 would read as "priced"
        return lambda *_: litellm_cost

    def _classified(self, litellm: Any, exc: BaseException, model: str) -> Exception:
        return classify_error(
            litellm, exc, self._api_key, model=model, api_base=self.api_base, key_setting=self.key_setting
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


def _read_response(response: Any, model: str) -> tuple[str, Any, float | None]:
    """A whole reply's text, usage and the price litellm put on it (its cost_per_token's)."""
    try:
        text = response.choices[0].message.content or ""
    except (AttributeError, IndexError, TypeError) as exc:
        raise TransientModelError(f"malformed reply from {model}: {exc}") from None
    cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
    return text, getattr(response, "usage", None), cost


async def _read_stream(stream: Any, on_text: TextSink) -> tuple[str, Any]:
    """A streamed reply: each piece to `on_text`, the usage from the final chunk (None if the server sent none)."""
    text, usage = StreamedText(on_text), None
    async for chunk in stream:
        for choice in getattr(chunk, "choices", None) or []:
            text.add(getattr(getattr(choice, "delta", None), "content", None))
        usage = getattr(chunk, "usage", None) or usage
    return text.text, usage
