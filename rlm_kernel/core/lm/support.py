"""What both LMs (litellm's and the direct one) share: naming failures, settling usage, prices, streaming text.

A first run against a real provider meets these: a key that is missing or wrong, a server
that is down, a prompt over the model's window, a server that reports no usage, a model
nobody has priced. Each gets one message that says what happened, where, and what to do.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from typing import Any

from rlm_kernel.core.errors import ConfigError, ContextTooLong, ModelAuthError, ModelError, TransientModelError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm.price_map import NO_DETAIL, TokenDetail
from rlm_kernel.core.settings import BY_NAME

TextSink = Callable[[str], None]  # receives each piece of a reply as it streams in
PriceFn = Callable[[str, int, int, TokenDetail], "float | None"]
CONTEXT_LENGTH_MARKERS = (
    "context_length_exceeded",
    "maximum context length",
    "context window",
    "too many tokens",
    "prompt is too long",  # Anthropic
)


def provider_of(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


def provider_key_variable(model: str) -> str:
    """The environment variable a provider's key usually lives in: OPENAI_API_KEY for openai/..., and so on."""
    return f"{provider_of(model).upper().replace('-', '_')}_API_KEY"


def resolve_api_key(model: str, api_key: str | None) -> str | None:
    """The key to send: the one given, else the provider's usual environment variable; None when neither is set."""
    return api_key or os.environ.get(provider_key_variable(model)) or None


def key_hint(model: str, key_setting: str) -> str:
    """What to set for a key: the provider's variable, the setting, its flag and variable, the magics' trait."""
    setting = BY_NAME[key_setting]
    flags = ", ".join(setting.cli)
    return (
        f"set {provider_key_variable(model)} or {setting.env}, or pass {key_setting}= "
        f"(rlm run {flags}; %config RLMMagics.{key_setting})"
    )


def certificate_failure(where: str, detail: str) -> ModelError:
    """A TLS certificate the client could not verify: not transient, and the message names the two fixes."""
    return ModelError(
        f"cannot verify the TLS certificate of {where}: {detail}; give the CA bundle that signed it "
        "(ca_bundle=, RLM_CA_BUNDLE, or SSL_CERT_FILE), or for a test server only tls_verify=False"
    )


def looks_like_certificate_failure(text: str) -> bool:
    lowered = text.lower()
    return "certificate_verify_failed" in lowered or "certificate verify failed" in lowered


def ssl_option(tls_verify: bool, ca_bundle: str | None) -> Any:
    """aiohttp's `ssl=`: False (no verification), a context trusting `ca_bundle`, or True (the default trust)."""
    if not tls_verify:
        return False
    if ca_bundle:
        return ssl.create_default_context(cafile=ca_bundle)
    return True


def litellm_ssl_verify(tls_verify: bool, ca_bundle: str | None) -> bool | str:
    """litellm's `ssl_verify` for the same settings (True: its default trust, SSL_CERT_FILE included)."""
    if not tls_verify:
        return False
    return ca_bundle or True


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """The wait a 429 or 5xx asks for: `retry-after-ms` (OpenAI's), else `Retry-After` in seconds or as an
    HTTP date (RFC 9110); None when the server asked for none, or in words nobody reads."""
    if not headers:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, as HTTP dates are
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - time.time())


def auth_failure(where: str, status: int | None, detail: str, hint: str) -> ModelAuthError:
    if _NO_KEY.search(detail):  # found missing before anything was sent: nothing was refused
        return ModelAuthError(f"no API key for {where}, so nothing was sent; {hint}")
    code = f" (HTTP {status})" if status else ""
    return ModelAuthError(f"{where} refused the credentials{code}: {detail.rstrip('. ')}; {hint}")


_NO_KEY = re.compile(r"\bno API key\b|\bmissing\b.*\bAPI key\b", re.I)


def context_failure(model: str, detail: str) -> ContextTooLong:
    return ContextTooLong(f"the prompt does not fit {model}'s context window: {detail}")


def looks_like_context_length(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in CONTEXT_LENGTH_MARKERS)


def first_line(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text.splitlines()[0][:limit] if text else ""


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
_AUTH_NAMES = {"AuthenticationError", "PermissionDeniedError"}


def classify_error(
    litellm: Any,
    exc: BaseException,
    api_key: str | None,
    *,
    model: str = "",
    api_base: str | None = None,
    key_setting: str = "api_key",
) -> ModelError:
    """A one-line ModelError from a litellm exception: transient when a retry may succeed; the key never shown."""
    status = getattr(exc, "status_code", None)
    detail = first_line(str(exc)) or type(exc).__name__
    if api_key:
        detail = detail.replace(api_key, "[redacted]")
    where = api_base or f"the {provider_of(model)} API"
    # litellm reports a missing key as an InternalServerError (a 500): it must not be retried as one.
    if type(exc).__name__ in _AUTH_NAMES or status in (401, 403) or "missing credentials" in detail.lower():
        return auth_failure(where, status if status in (401, 403) else None, detail, key_hint(model, key_setting))
    if type(exc).__name__ == "ContextWindowExceededError" or (status == 400 and looks_like_context_length(detail)):
        return context_failure(model, detail)
    chain = _chain_text(exc)
    if looks_like_certificate_failure(chain):
        return certificate_failure(where, detail)
    if "ModuleNotFoundError" in chain:  # litellm reports a module it lacks as a connection error: no retry helps
        return ModelError(f"litellm cannot make this call: {detail} (install the missing package)")
    message = f"{type(exc).__name__}: {detail}"
    if "connection error" in detail.lower():  # litellm's words for a refused or dropped connection
        return TransientModelError(f"cannot connect to {where}: {message}")
    transient = (
        type(exc).__name__ in _TRANSIENT_NAMES
        or isinstance(exc, (TimeoutError, ConnectionError))
        or (isinstance(status, int) and (status == 429 or status >= 500))
        or (isinstance(exc, litellm.APIError) and status is None)
    )
    if not transient:
        return ModelError(message)
    return TransientModelError(message, retry_after=retry_after_seconds(_response_headers(exc)))


def _chain_text(exc: BaseException | None) -> str:
    """An exception and those it was raised from (litellm wraps the OpenAI client's, which wraps httpx's)."""
    parts: list[str] = []
    while exc is not None and len(parts) < 8:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return " | ".join(parts)


def _response_headers(exc: BaseException) -> Mapping[str, str] | None:
    """The HTTP headers of the reply a litellm exception carries (its httpx response), if any."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or getattr(exc, "litellm_response_headers", None)
    return headers if isinstance(headers, Mapping) else None


ESTIMATE_CHARS_PER_TOKEN = 3  # estimate_tokens' rate: a window of W tokens takes W * 3 characters by it
PROMPT_OVERHEAD_TOKENS = 8  # what estimate_tokens adds for each message


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A deliberately high token estimate (3 chars a token) used to reserve budget before a call."""
    return sum(
        math.ceil(len(str(m.get("content") or "")) / ESTIMATE_CHARS_PER_TOKEN) + PROMPT_OVERHEAD_TOKENS
        for m in messages
    )


def sub_capacity_chars(window: int | None) -> int | None:
    """The longest one-message prompt that fits `window` input tokens by estimate_tokens (None when unknown)."""
    if window is None:
        return None
    return max(0, window - PROMPT_OVERHEAD_TOKENS) * ESTIMATE_CHARS_PER_TOKEN


def oversize_prompt_message(prompt_chars: int, model: str, window: int) -> str:
    """The slot text of a sub-call too long to send: what happened and what to do instead."""
    capacity = sub_capacity_chars(window) or 0
    return (
        f"Error: prompt not sent: its {prompt_chars:,} characters are more than {model} takes "
        f"(about {capacity:,} characters, {window:,} tokens). Split the text into parts of at most "
        f"{capacity:,} characters (partition(size=...)) and ask about each with llm_query_batched."
    )


def settle_usage(
    price: PriceFn,
    count: Callable[[], tuple[int, int]],
    model: str,
    usage: Any,
) -> Usage:
    """One call's usage: as the server reported it (an OpenAI-format dict or litellm's Usage), or counted here
    (and marked so) when it reported none; priced by `price` with its cached and reasoning tokens.

    A server that omits usage, or reports zero prompt tokens (litellm's stand-in for a missing
    field), would otherwise leave every token and cost budget unbound.
    """
    prompt_tokens, completion_tokens = _field(usage, "prompt_tokens"), _field(usage, "completion_tokens")
    reported = isinstance(prompt_tokens, int) and isinstance(completion_tokens, int) and prompt_tokens > 0
    if not reported:
        prompt_tokens, completion_tokens = count()
    cost = price(model, int(prompt_tokens), int(completion_tokens), token_detail(usage) if reported else NO_DETAIL)
    return Usage(
        llm_calls=1,
        input_tokens=int(prompt_tokens),
        output_tokens=int(completion_tokens),
        cost_usd=float(cost or 0.0),
        cost_known=cost is not None,
        counted_calls=0 if reported else 1,
    )


def token_detail(usage: Any) -> TokenDetail:
    """The cached input, cache writes and reasoning a reply's usage reports (OpenAI's fields, as litellm keeps them)."""
    prompt, completion = _field(usage, "prompt_tokens_details"), _field(usage, "completion_tokens_details")
    return TokenDetail(
        cached_input=_count(prompt, "cached_tokens"),
        cache_write=_count(prompt, "cache_creation_tokens") or _count(usage, "cache_creation_input_tokens"),
        reasoning=_count(completion, "reasoning_tokens"),
    )


def _field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


def _count(record: Any, name: str) -> int:
    value = _field(record, name) if record is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def per_token_prices(prices: Mapping[str, Any] | None) -> dict[str, tuple[float, float]]:
    """`prices={"model": {"input": 0.15, "output": 0.6}}` (US dollars per million tokens) as dollars per token."""
    table: dict[str, tuple[float, float]] = {}
    for model, entry in (prices or {}).items():
        if not isinstance(entry, Mapping) or set(entry) != {"input", "output"}:
            raise ConfigError(
                f'prices[{model!r}] must be {{"input": dollars, "output": dollars}} per million tokens, not {entry!r}'
            )
        rates = entry["input"], entry["output"]
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 0 for r in rates):
            raise ConfigError(f"prices[{model!r}]: input and output must be numbers >= 0 (dollars per million tokens)")
        table[model] = (rates[0] / 1e6, rates[1] / 1e6)
    return table


def run_price(
    prices: Mapping[str, tuple[float, float]], model: str, input_tokens: int, output_tokens: int
) -> float | None:
    """US dollars by the run's own `prices` (per_token_prices), which come before any map; None: not priced there."""
    if model not in prices:
        return None
    input_rate, output_rate = prices[model]
    return input_tokens * input_rate + output_tokens * output_rate


class StreamedText:
    """A reply assembled from streamed pieces, each passed on to `sink` as it arrives."""

    def __init__(self, sink: TextSink) -> None:
        self._sink = sink
        self._pieces: list[str] = []

    def add(self, piece: str | None) -> None:
        if piece:
            self._pieces.append(piece)
            self._sink(piece)

    @property
    def text(self) -> str:
        return "".join(self._pieces)
