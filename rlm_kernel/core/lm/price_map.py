"""litellm's price map, read without importing litellm (which costs about 2.7 s and 125 MB).

The direct transport (OpenAI-compatible servers, Anthropic) prices its calls and finds input windows here.
The map is the JSON file litellm ships beside its `__init__.py` and loads itself when
LITELLM_LOCAL_MODEL_COST_MAP is set; once litellm is imported anyway, its live `model_cost` is
read instead, so `litellm.register_model` still counts. A model is resolved as litellm's
`cost_per_token` resolves it: the name as given, then without its provider prefix, the entry's
provider matching the prefix. Entries whose price depends on more than the token counts (tiered
tables, off-peak hours) are left to litellm itself (`needs_litellm`).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

PRICE_MAP_FILE = "model_prices_and_context_window_backup.json"

# litellm.openai_compatible_providers of the locked litellm (tests/test_price_map.py checks both lists): providers
# whose servers speak OpenAI's chat-completions format, so `hosted_vllm/m` is sent to the server as `m`.
OPENAI_COMPATIBLE_PROVIDERS = frozenset(
    (
        "anyscale groq nvidia_nim cerebras baseten sambanova ai21_chat ai21 volcengine codestral deepseek tencent "
        "deepinfra perplexity xinference xai zai together_ai fireworks_ai empower friendliai azure_ai github "
        "litellm_proxy hosted_vllm llamafile lm_studio galadriel github_copilot chatgpt novita meta_llama publicai "
        "synthetic tensormesh apertis nano-gpt poe chutes parasail libertai featherless_ai nscale nebius dashscope "
        "qwencloud qwen_ai_platform modelscope moonshot v0 helicone morph lambda_ai inception hyperbolic "
        "vercel_ai_gateway aiml edenai wandb cometapi clarifai docker_model_runner ragflow pinstripes darkbloom meta "
        "cognition cortecs scx-ai prism sail reka"
    ).split()
)
# litellm.provider_list of the locked litellm: a name starting with one of these names its provider.
LITELLM_PROVIDERS = frozenset(
    (
        "a2a a2a_agent ai21 ai21_chat aiml aiohttp_openai amazon_nova anthropic anthropic_text apertis assemblyai "
        "auto_router aws_polly aws_textract azure azure_ai azure_speech azure_text baseten bedrock bedrock_mantle "
        "black_forest_labs bytez cerebras charity_engine chatgpt chutes clarifai cloudflare codestral cognition "
        "cohere cohere_chat cometapi compactifai cortecs cursor custom custom_openai darkbloom dashscope "
        "databricks datarobot deepgram deepinfra deepseek docker_model_runner dotprompt edenai elevenlabs empower "
        "fal_ai featherless_ai fireworks_ai friendliai galadriel gdc gemini gigachat github github_copilot "
        "gradient_ai groq helicone heroku hosted_vllm huggingface humanloop hyperbolic inception infinity jina_ai "
        "lambda_ai langflow langfuse langgraph lemonade libertai litellm_agent litellm_proxy llamafile lm_studio "
        "manus maritalk meta meta_llama milvus minimax mistral modelscope mongodb moonshot morph nadir nano-gpt "
        "nebius neosantara nlp_cloud novita nscale nvidia_nim nvidia_riva oci ollama ollama_chat oobabooga openai "
        "openai_like openrouter ovhcloud parasail perplexity petals pg_vector pinstripes poe predibase prism "
        "publicai qwen_ai_platform qwencloud ragflow recraft reducto reka replicate runwayml s3_vectors sagemaker "
        "sagemaker_chat sagemaker_nova sail sambanova sap scaleway scx-ai snowflake soniox stability "
        "strands_decider synthetic tencent tensormesh text-completion-codestral text-completion-inception "
        "text-completion-openai together_ai topaz transcribe triton typesafe v0 valkey vercel_ai_gateway "
        "vertex_ai vertex_ai_beta vllm volcengine voyage wandb watsonx watsonx_text xai xiaomi_mimo xinference "
        "zai"
    ).split()
)
# Providers whose prefix stands for "whatever the entry says" in litellm's provider check.
_ANY_ENTRY_PROVIDER = frozenset(("litellm_proxy", "github"))
_PLAIN_NAME_PROVIDERS = frozenset(("openai", "text-completion-openai"))
# Providers this module prices itself (the rest, with their own calculators in litellm, are litellm's to price).
# Anthropic's calculator is the generic one plus multipliers for a priority tier, a region or fast mode, which a
# reply to this project's requests does not report (tests/test_price_map.py compares every Anthropic model).
MAP_PRICED = _PLAIN_NAME_PROVIDERS | OPENAI_COMPATIBLE_PROVIDERS | {"anthropic"}
_ROUTED_FINE_TUNES = ("ft:gpt-3.5-turbo", "ft:gpt-4", "ft:davinci-002", "ft:babbage-002")
_INCLUSIVE_THRESHOLD_PROVIDERS = frozenset(("xai",))  # bill the higher tier once the prompt reaches it
_RATE_PREFIXES = ("input_cost_per_token", "output_cost_per_token")
_UNMODELLED_KEYS = ("tiered_pricing", "off_peak_pricing")
_OWN_CALCULATOR = frozenset(("perplexity",))
_READ, _WRITE = "cache_read_input_token_cost", "cache_creation_input_token_cost"
# litellm's cached-input rate for a provider whose map entries give none (Fireworks' published 50% discount).
_DEFAULT_CACHE_READ_RATIO = {"fireworks_ai": 0.5}
_REASONING_AS_OUTPUT = frozenset(("xai",))  # litellm bills xAI's reasoning as ordinary completion tokens

_lock = threading.Lock()
_loaded: Mapping[str, Any] | None = None


def price_map() -> Mapping[str, Any]:
    """litellm's live map once litellm is imported, else its shipped JSON read once (empty without litellm)."""
    global _loaded
    litellm = sys.modules.get("litellm")
    if litellm is not None and isinstance(getattr(litellm, "model_cost", None), dict):
        return litellm.model_cost  # type: ignore[no-any-return]
    with _lock:
        if _loaded is None:
            _loaded = _read_shipped_map()
        return _loaded


def _read_shipped_map() -> Mapping[str, Any]:
    try:
        spec = importlib.util.find_spec("litellm")  # finds the package without running its __init__
    except (ImportError, ValueError):
        return {}
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / PRICE_MAP_FILE
    try:
        return ShippedMap(path)
    except (OSError, ValueError, IndexError):  # unreadable, or not one JSON object
        return {}


_decoder = json.JSONDecoder()
_space = re.compile(r"\s*")


class ShippedMap(Mapping[str, Any]):
    """The shipped map's entries, each decoded from the file when first looked up: decoded whole, the map is
    about 4.6 MB of Python objects (7.5 MB at its peak, with the file's text) in every process that prices a call,
    for the one or two models a run uses. One pass over the file notes where each entry lies."""

    def __init__(self, path: Path) -> None:
        self._path = path
        text = path.read_text(encoding="utf-8")
        self._entries: dict[str, Any] = {}
        if text.isascii():
            self._spans = _entry_spans(text)
        else:  # an offset in the text would not be one in the file's bytes: decode it all, as litellm does
            self._entries = json.loads(text)
            if not isinstance(self._entries, dict):
                raise ValueError("not a JSON object")
            self._spans = dict.fromkeys(self._entries, (0, 0))
        self._spans.pop("sample_spec", None)
        self._entries.pop("sample_spec", None)

    def __getitem__(self, name: str) -> Any:
        if name not in self._entries:
            start, end = self._spans[name]  # KeyError: not in the map
            with self._path.open("rb") as file:
                file.seek(start)
                self._entries[name] = json.loads(file.read(end - start))
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)

    def __contains__(self, name: object) -> bool:
        return name in self._spans


def _after_space(text: str, at: int) -> int:
    match = _space.match(text, at)
    return match.end() if match else at


def _entry_spans(text: str) -> dict[str, tuple[int, int]]:
    """Where each value of the JSON object `text` lies (a later duplicate name wins, as in json.loads); each value
    is decoded once to find its end and let go (about 55 ms for the whole map here, against 32 ms to decode and
    keep it). ValueError or IndexError: `text` is not one JSON object."""
    spans: dict[str, tuple[int, int]] = {}
    at = _after_space(text, 0)
    if text[at] != "{":
        raise ValueError("not a JSON object")
    at = _after_space(text, at + 1)
    while text[at] != "}":
        name, at = _decoder.raw_decode(text, at)
        if not isinstance(name, str):
            raise ValueError(f"a name expected at {at}")
        at = _after_space(text, at)
        if text[at] != ":":
            raise ValueError(f"':' expected at {at}")
        start = _after_space(text, at + 1)
        end = _decoder.raw_decode(text, start)[1]
        spans[name] = (start, end)
        at = _after_space(text, end)
        if text[at] == ",":
            at = _after_space(text, at + 1)
        elif text[at] != "}":
            raise ValueError(f"',' or '}}' expected at {at}")
    return spans


def provider_prefix(model: str) -> str | None:
    """The litellm provider a name starts with (`openai`, `hosted_vllm`, ...), None for a plain or repo name."""
    provider, _, rest = model.partition("/")
    if rest and provider in LITELLM_PROVIDERS:
        return provider
    return None


def entry(model: str) -> tuple[str | None, dict[str, Any] | None]:
    """The provider litellm would bill `model` under and its map entry (None: the map does not know it)."""
    table = price_map()
    provider = provider_prefix(model)
    if provider is None:
        # litellm routes a plain name only to OpenAI (`gpt-4o-mini`; of the fine-tuned `ft:` names only GPT-3.5,
        # GPT-4, davinci and babbage ones); any other plain name it cannot price.
        found = _as_entry(table.get(model))
        routed = not model.startswith("ft:") or model.startswith(_ROUTED_FINE_TUNES)
        if found is not None and routed and found.get("litellm_provider", "openai") in _PLAIN_NAME_PROVIDERS:
            return found.get("litellm_provider", "openai"), found
        return None, None
    for name in (model, model.split("/", 1)[1]):
        found = _as_entry(table.get(name))
        if found is not None and _provider_matches(found.get("litellm_provider"), provider):
            return provider, found
    return provider, None


def _as_entry(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _provider_matches(entry_provider: str | None, provider: str) -> bool:
    return (
        entry_provider is None
        or entry_provider == provider
        or provider in _ANY_ENTRY_PROVIDER
        or (provider == "azure_ai" and entry_provider in ("azure", "openai"))
        or (provider == "fireworks_ai" and entry_provider.startswith("fireworks_ai"))
    )


def prices_itself(model: str) -> bool:
    """Whether this module prices `model` (an OpenAI-compatible provider's, its price a function of tokens)."""
    provider, found = entry(model)
    return found is not None and provider in MAP_PRICED and not needs_litellm(model)


def needs_litellm(model: str) -> bool:
    """Whether the model's price depends on more than its token counts: litellm itself must price it."""
    provider, found = entry(model)
    return found is not None and (provider in _OWN_CALCULATOR or any(found.get(key) for key in _UNMODELLED_KEYS))


@dataclass(frozen=True)
class TokenDetail:
    """The parts of a call's tokens priced apart from the rest: input read from or written to the provider's
    prompt cache (part of the input tokens), and hidden reasoning (part of the output tokens)."""

    cached_input: int = 0
    cache_write: int = 0
    reasoning: int = 0


NO_DETAIL = TokenDetail()


def cost(model: str, input_tokens: int, output_tokens: int, detail: TokenDetail = NO_DETAIL) -> float | None:
    """US dollars by litellm's map, as litellm's cost_per_token computes them (cached input at the cache-read
    rate, cache writes at the cache-creation rate, reasoning at the reasoning rate, each the input or output
    rate where the map has none); None for a model it does not know."""
    provider, found = entry(model)
    if found is None:
        return None
    input_rate, output_rate = _rate(found, "input_cost_per_token"), _rate(found, "output_cost_per_token")
    read_rate, write_rate = _rate(found, _READ, None), _rate(found, _WRITE, None)
    if read_rate is None and provider in _DEFAULT_CACHE_READ_RATIO:
        read_rate = input_rate * _DEFAULT_CACHE_READ_RATIO[provider]
    inclusive = provider in _INCLUSIVE_THRESHOLD_PROVIDERS
    for threshold, suffix in _thresholds(found):
        if input_tokens > threshold or (inclusive and input_tokens == threshold):
            input_rate = _rate(found, f"input_cost_per_token_above_{suffix}_tokens", input_rate)
            output_rate = _rate(found, f"output_cost_per_token_above_{suffix}_tokens", output_rate)
            read_rate = _rate(found, f"{_READ}_above_{suffix}_tokens", read_rate)
            write_rate = _rate(found, f"{_WRITE}_above_{suffix}_tokens", write_rate)
    cached, written = detail.cached_input, detail.cache_write
    plain_input = max(input_tokens - cached - written, 0) if cached or written else input_tokens
    prompt = (
        plain_input * input_rate
        + cached * (input_rate if read_rate is None else read_rate)
        + written * (input_rate if write_rate is None else write_rate)
    )
    reasoning = 0 if provider in _REASONING_AS_OUTPUT else detail.reasoning
    plain_output = max(output_tokens - reasoning, 0) if reasoning else output_tokens
    reasoning_rate = _rate(found, "output_cost_per_reasoning_token", output_rate)
    return float(prompt + plain_output * output_rate + reasoning * (reasoning_rate or 0.0))


def _thresholds(found: Mapping[str, Any]) -> list[tuple[float, str]]:
    """The entry's `..._above_<N>[k]_tokens` thresholds, lowest first (tier, batch and cache keys aside)."""
    found_thresholds: set[tuple[float, str]] = set()
    for key, value in found.items():
        if value is None or not key.startswith(tuple(f"{p}_above_" for p in _RATE_PREFIXES)):
            continue
        suffix = key.rsplit("_above_", 1)[1]
        if not suffix.endswith("_tokens"):
            continue  # a service tier's or the batch API's own threshold
        text = suffix.removesuffix("_tokens")
        try:
            found_thresholds.add((float(text.replace("k", "")) * (1000 if "k" in text else 1), text))
        except ValueError:
            continue
    return sorted(found_thresholds)


@overload
def _rate(found: Mapping[str, Any], key: str, default: float = 0.0) -> float: ...
@overload
def _rate(found: Mapping[str, Any], key: str, default: float | None) -> float | None: ...
def _rate(found: Mapping[str, Any], key: str, default: float | None = 0.0) -> float | None:
    value = found.get(key)
    if isinstance(value, bool) or value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def input_window(model: str) -> int | None:
    """The input tokens the map gives `model` (None when it does not know the model).

    As litellm's get_model_info: the name as given is looked up whatever its provider, then as priced.
    """
    found = _as_entry(price_map().get(model)) or entry(model)[1]
    if found is None:
        return None
    window = found.get("max_input_tokens") or found.get("max_tokens")
    return int(window) if isinstance(window, (int, float)) and not isinstance(window, bool) and window > 0 else None
