"""Which transport calls a model, and the LM that does it (ARCHITECTURE.md, "Two transports")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.lm import anthropic, endpoints, price_map
from rlm_kernel.core.lm.direct import OpenAICompatibleLM, picks_direct
from rlm_kernel.core.lm.litellm_lm import LM, OFFLINE_PROVIDERS, LiteLLM, import_litellm_soon


@dataclass(frozen=True)
class TLS:
    """How servers' certificates are checked, on both transports: verified (against `ca_bundle` when given)."""

    verify: bool = True
    ca_bundle: str | None = None


def choose_transport(
    setting: str, model: str, api_base: str | None, router: object, params: Mapping[str, Any] | None = None
) -> str:
    """The transport a model is called through: the setting, with "auto" resolved for this model, server and
    sampling parameters (`params`).

    `transport="direct"` for a model it cannot serve is refused here, in one line, before any call.
    """
    if setting == "auto":
        return "direct" if picks_direct(model, api_base, router, params) else "litellm"
    if setting == "direct":
        _check_direct(model, api_base, router, params or {})
    return setting


def _check_direct(model: str, api_base: str | None, router: object, params: Mapping[str, Any]) -> None:
    if router is not None:
        raise ConfigError("transport='direct' posts to one OpenAI-compatible server, not a router: use 'litellm'")
    if model.startswith(OFFLINE_PROVIDERS):
        raise ConfigError(f"transport='direct' cannot call {model}, an offline model: use 'auto' or 'litellm'")
    provider = price_map.provider_prefix(model)
    if provider == "anthropic":  # posted in Anthropic's own format, to the api_base or Anthropic's endpoint
        if names := anthropic.untranslated(params):
            raise ConfigError(
                f"transport='direct' sends {model} text requests only; {', '.join(names)} need litellm's "
                "translation: use transport='litellm' (or 'auto')"
            )
        return
    foreign = provider is not None and provider != "openai" and provider not in price_map.OPENAI_COMPATIBLE_PROVIDERS
    if foreign and endpoints.cloud_endpoint(model) is None:
        raise ConfigError(
            f"transport='direct' speaks OpenAI's chat-completions format (and Anthropic's), and {model} is a model "
            f"of {provider}, whose API differs: use transport='litellm' (or 'auto')"
        )
    if not api_base and endpoints.cloud_endpoint(model) is None:
        raise ConfigError(f"transport='direct' needs api_base for {model} (no OpenAI-compatible provider endpoint)")


def make_lm(
    transport: str,
    api_base: str | None,
    api_key: str | None,
    router: list[dict[str, Any]] | None,
    prices: Mapping[str, Any] | None,
    key_setting: str,
    tls: TLS = TLS(),
) -> LM:
    """The LM of a chosen transport, with the run's server, key, prices and certificate checks."""
    if transport == "litellm":
        import_litellm_soon()
        return LiteLLM(
            api_base=api_base,
            api_key=api_key,
            router=router,
            prices=prices,
            key_setting=key_setting,
            tls_verify=tls.verify,
            ca_bundle=tls.ca_bundle,
        )
    return OpenAICompatibleLM(
        api_base=api_base,
        api_key=api_key,
        prices=prices,
        key_setting=key_setting,
        tls_verify=tls.verify,
        ca_bundle=tls.ca_bundle,
    )
