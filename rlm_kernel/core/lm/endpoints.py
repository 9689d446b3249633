"""Where the direct transport posts a model with no `api_base`: OpenAI's endpoint, or an OpenAI-compatible
provider's, found as litellm finds it, without importing litellm.

- `openai/...` (and a plain OpenAI name such as `gpt-4o-mini`): `OPENAI_BASE_URL`, else `OPENAI_API_BASE`,
  else https://api.openai.com/v1, the key in `OPENAI_API_KEY`, and the `OpenAI-Organization` /
  `OpenAI-Project` headers from `OPENAI_ORG_ID` or `OPENAI_ORGANIZATION` / `OPENAI_PROJECT_ID` or
  `OPENAI_PROJECT`, as the OpenAI client and litellm read them.
- The providers litellm configures from its data file (`litellm/llms/openai_like/providers.json`, read as
  the price map is read) whose API is plain chat completions: base URL, the variable overriding it, the key's
  variable.
- A few large providers litellm configures in code (`PROVIDER_ENDPOINTS`; tests/test_price_map.py checks each
  against `litellm.get_llm_provider`).

Anthropic's models are posted in its own format (core/lm/anthropic.py); every other provider with its own API
(Gemini, Bedrock, Vertex, Azure, ...) stays on litellm.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm_kernel.core.lm import price_map

OPENAI_BASE = "https://api.openai.com/v1"
# The OpenAI client reads OPENAI_ORG_ID and OPENAI_PROJECT_ID, litellm OPENAI_ORGANIZATION; either is sent.
_OPENAI_HEADERS = (
    ("OpenAI-Organization", ("OPENAI_ORG_ID", "OPENAI_ORGANIZATION")),
    ("OpenAI-Project", ("OPENAI_PROJECT_ID", "OPENAI_PROJECT")),
)
PROVIDERS_FILE = ("llms", "openai_like", "providers.json")
# litellm's JSON providers whose entries ask for more than a bearer key and a chat-completions body.
_UNSUPPORTED_KEYS = ("headers", "special_handling", "constraints")
_PLAIN_BASE_CLASSES = (None, "openai_gpt")
_CHAT_PATH = "/v1/chat/completions"
# Providers litellm configures in code, as (default base URL, base URL variable, key variables in order).
PROVIDER_ENDPOINTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "groq": ("https://api.groq.com/openai/v1", "GROQ_API_BASE", ("GROQ_API_KEY",)),
    "deepseek": ("https://api.deepseek.com/beta", "DEEPSEEK_API_BASE", ("DEEPSEEK_API_KEY",)),
    "together_ai": (
        "https://api.together.ai/v1",
        "TOGETHER_AI_API_BASE",
        ("TOGETHER_API_KEY", "TOGETHER_AI_API_KEY", "TOGETHERAI_API_KEY", "TOGETHER_AI_TOKEN"),
    ),
    "cerebras": ("https://api.cerebras.ai/v1", "CEREBRAS_API_BASE", ("CEREBRAS_API_KEY",)),
    "sambanova": ("https://api.sambanova.ai/v1", "SAMBANOVA_API_BASE", ("SAMBANOVA_API_KEY",)),
    "nvidia_nim": ("https://integrate.api.nvidia.com/v1", "NVIDIA_NIM_API_BASE", ("NVIDIA_NIM_API_KEY",)),
    "nebius": ("https://api.studio.nebius.ai/v1", "NEBIUS_API_BASE", ("NEBIUS_API_KEY",)),
    "novita": ("https://api.novita.ai/v3/openai", "NOVITA_API_BASE", ("NOVITA_API_KEY",)),
}

_lock = threading.Lock()
_json_providers: dict[str, tuple[str, str | None, tuple[str, ...]]] | None = None


@dataclass(frozen=True)
class Endpoint:
    """A server to post chat completions to, where its key is found, and the headers it also wants."""

    base_url: str
    key_variables: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)
    cloud: bool = False  # the provider's own API (no api_base given): a missing key fails before any request
    wire: str = "openai"  # the request and reply format: "openai" (chat completions) or "anthropic" (Messages API)

    def key(self, given: str | None) -> str | None:
        return given or next((os.environ[v] for v in self.key_variables if os.environ.get(v)), None)


def cloud_endpoint(model: str) -> Endpoint | None:
    """The provider's own endpoint for a model given no api_base; None: not an OpenAI-compatible cloud API."""
    provider = price_map.provider_prefix(model)
    if provider == "openai" or (provider is None and price_map.entry(model)[0] == "openai"):
        headers = {
            header: value
            for header, variables in _OPENAI_HEADERS
            if (value := next((os.environ[v] for v in variables if os.environ.get(v)), None))
        }
        base = os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE") or OPENAI_BASE
        return Endpoint(base, ("OPENAI_API_KEY",), headers, cloud=True)
    prefix = model.partition("/")[0] if "/" in model else ""
    configured = PROVIDER_ENDPOINTS.get(prefix) or json_providers().get(prefix)
    if configured is None:
        return None
    default, base_variable, key_variables = configured
    base = (os.environ.get(base_variable) if base_variable else None) or default
    return Endpoint(base, key_variables, cloud=True)


def json_providers() -> dict[str, tuple[str, str | None, tuple[str, ...]]]:
    """litellm's JSON-configured providers that speak plain chat completions: base URL, its variable, key variables."""
    global _json_providers
    with _lock:
        if _json_providers is None:
            _json_providers = _read_providers_file()
        return _json_providers


def _read_providers_file() -> dict[str, tuple[str, str | None, tuple[str, ...]]]:
    try:
        spec = importlib.util.find_spec("litellm")  # the package's folder, without running its __init__
    except (ImportError, ValueError):
        return {}
    if spec is None or not spec.submodule_search_locations:
        return {}
    try:
        path = Path(next(iter(spec.submodule_search_locations)), *PROVIDERS_FILE)
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    found: dict[str, tuple[str, str | None, tuple[str, ...]]] = {}
    for name, entry in data.items() if isinstance(data, dict) else ():
        if not isinstance(entry, dict) or any(entry.get(key) for key in _UNSUPPORTED_KEYS):
            continue
        if entry.get("base_class") not in _PLAIN_BASE_CLASSES:
            continue
        endpoints = entry.get("supported_endpoints") or [_CHAT_PATH]
        base, key_variable = entry.get("base_url"), entry.get("api_key_env")
        if _CHAT_PATH in endpoints and isinstance(base, str) and isinstance(key_variable, str):
            found[name] = (base, entry.get("api_base_env"), (key_variable,))
    return found
