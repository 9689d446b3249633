"""The run settings, each declared once.

`RLM(...)` validates its arguments here; the magics' traitlets and per-cell options, the
`rlm run` options, `%rlm config` and the settings a trace records are all generated from
`SETTINGS` (tests/test_architecture.py proves that `RLM`'s signature matches it).

A setting left unset takes its environment variable when it has one, else its default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.setting import Setting

ISOLATION_LIMITS = ("memory_limit", "cpu_seconds", "file_size_limit")


def _s(name: str, type_: type, default: Any, help_: str, **more: Any) -> Setting:
    return Setting(name, type_, default, help_, **more)


SETTINGS: tuple[Setting, ...] = (
    # models and providers
    _s(
        "model",
        str,
        None,
        "litellm model name of the root model, e.g. openai/gpt-4o-mini.",
        env="RLM_MODEL",
        cli=("--model",),
        magic=("--model", "-m"),
    ),
    _s(
        "sub_model",
        str,
        None,
        "Model for llm_query and child RLMs (default: the root model).",
        env="RLM_SUB_MODEL",
        cli=("--sub-model",),
        magic=("--sub-model",),
    ),
    _s(
        "api_base",
        str,
        None,
        "Base URL of an OpenAI-compatible server for the root model.",
        env="RLM_API_BASE",
        cli=("--api-base",),
        magic=("--api-base",),
    ),
    _s(
        "api_key",
        str,
        None,
        "API key for the root model (default: the provider's usual variable, e.g. OPENAI_API_KEY).",
        env="RLM_API_KEY",
        cli=("--api-key",),
        secret=True,
    ),
    _s(
        "sub_api_base",
        str,
        None,
        "Base URL for the sub-model, when it is served elsewhere (default: api_base).",
        env="RLM_SUB_API_BASE",
        cli=("--sub-api-base",),
        magic=("--sub-api-base",),
    ),
    _s(
        "sub_api_key",
        str,
        None,
        "API key for the sub-model's server (default: api_key).",
        env="RLM_SUB_API_KEY",
        cli=("--sub-api-key",),
        secret=True,
    ),
    _s(
        "transport",
        str,
        "auto",
        "How models are called: direct (posted to the OpenAI-compatible api_base itself, without litellm), "
        "litellm (any provider, a Router), or auto: direct for a model with an api_base, no router and an "
        "OpenAI-compatible provider prefix (openai/, hosted_vllm/, ...) or none, litellm otherwise; each model apart.",
        env="RLM_TRANSPORT",
        cli=("--transport",),
        magic=("--transport",),
        choices=("auto", "litellm", "direct"),
    ),
    _s(
        "tls_verify",
        bool,
        True,
        "Verify servers' TLS certificates (both transports); False only for a test server.",
        env="RLM_TLS_VERIFY",
        flag_values={"--no-tls-verify": False},
    ),
    _s(
        "ca_bundle",
        str,
        None,
        "A CA bundle file to verify servers' TLS certificates with (a corporate proxy's, a private server's).",
        env="RLM_CA_BUNDLE",
        cli=("--ca-bundle",),
    ),
    _s(
        "prices",
        dict,
        None,
        'US dollars per million tokens for models litellm cannot price, as JSON: {"openai/my-model": '
        '{"input": 0.15, "output": 0.6}}; without a price max_cost_usd cannot bind.',
        cli=("--prices",),
    ),
    _s(
        "sub_window",
        int,
        None,
        "Input tokens the sub-model accepts (default: litellm's model info); longer llm_query prompts are not sent.",
        cli=("--sub-window",),
        magic=("--sub-window",),
        minimum=1,
    ),
    _s(
        "stream",
        bool,
        False,
        "Stream each node's replies as they are written (model_text events, for live views).",
        cli=("--stream",),
    ),
    # sampling
    _s(
        "temperature",
        float,
        None,
        "Sampling temperature of the root model (default: the provider's).",
        cli=("--temperature",),
        magic=("--temperature",),
        minimum=0,
    ),
    _s(
        "top_p",
        float,
        None,
        "Nucleus sampling of the root model (default: the provider's).",
        cli=("--top-p",),
        magic=("--top-p",),
        minimum=0,
    ),
    _s(
        "seed",
        int,
        None,
        "Sampling seed of the root model, where the provider supports one.",
        cli=("--seed",),
        magic=("--seed",),
    ),
    _s(
        "model_params",
        dict,
        None,
        "Extra provider parameters for root calls, as a JSON object.",
        cli=("--model-params",),
    ),
    _s(
        "sub_temperature",
        float,
        None,
        "Sampling temperature of the sub-model (default: temperature).",
        cli=("--sub-temperature",),
        magic=("--sub-temperature",),
        minimum=0,
    ),
    _s(
        "sub_top_p", float, None, "Nucleus sampling of the sub-model (default: top_p).", cli=("--sub-top-p",), minimum=0
    ),
    _s("sub_seed", int, None, "Sampling seed of the sub-model (default: seed).", cli=("--sub-seed",)),
    _s(
        "sub_model_params",
        dict,
        None,
        "Extra provider parameters for sub-calls (default: model_params).",
        cli=("--sub-model-params",),
    ),
    # the shape of the tree
    _s(
        "max_depth",
        int,
        1,
        "RLM levels: 1 = a root with plain sub-model calls; 2 lets the root start child RLMs.",
        cli=("--max-depth",),
        magic=("--depth", "--max-depth"),
        minimum=1,
    ),
    _s(
        "max_iterations",
        int,
        20,
        "Replies the root model may make before it must answer.",
        cli=("--max-iterations",),
        magic=("--max-iterations",),
        minimum=1,
    ),
    _s(
        "child_max_iterations",
        int,
        None,
        "Replies a child RLM may make (default: half of max_iterations, at least 3).",
        cli=("--child-max-iterations",),
        minimum=1,
    ),
    _s(
        "concurrency",
        int,
        16,
        "Model calls and child RLMs in flight at once.",
        cli=("--concurrency",),
        magic=("--concurrency",),
        minimum=1,
    ),
    # budgets for the whole tree
    _s(
        "max_llm_calls",
        int,
        None,
        "Model calls allowed for the whole call tree.",
        cli=("--max-llm-calls",),
        magic=("--max-llm-calls",),
        minimum=0,
    ),
    _s(
        "max_tokens",
        int,
        None,
        "Input plus output tokens allowed for the whole call tree.",
        cli=("--max-tokens",),
        magic=("--max-tokens",),
        minimum=0,
    ),
    _s(
        "max_cost_usd",
        float,
        None,
        "US dollars allowed for the whole call tree (priced models only).",
        cli=("--max-cost-usd",),
        magic=("--budget", "--max-cost-usd"),
        minimum=0,
    ),
    _s(
        "max_seconds",
        float,
        None,
        "Wall-clock seconds allowed for a run.",
        cli=("--max-seconds",),
        magic=("--timeout", "--max-seconds"),
        minimum=0,
    ),
    _s(
        "max_output_tokens",
        int,
        4096,
        "Output tokens one model call may use; applied under a token or cost budget, which reserves it per call.",
        cli=("--max-output-tokens",),
        magic=("--max-output-tokens",),
        minimum=1,
    ),
    # model code and model calls
    _s(
        "max_output_chars",
        int,
        10_000,
        "Characters of a code block's output shown to the model (head and tail).",
        cli=("--max-output-chars",),
        magic=("--max-output-chars",),
        minimum=100,
    ),
    _s(
        "cell_timeout",
        float,
        None,
        "Seconds one model-written code block may run before it is stopped.",
        cli=("--cell-timeout",),
        magic=("--cell-timeout",),
        minimum=0,
    ),
    _s(
        "call_timeout",
        float,
        120.0,
        "Seconds one model call may take before it is retried.",
        cli=("--call-timeout",),
        minimum=0,
    ),
    _s(
        "retries",
        int,
        3,
        "Retries of a model call that failed transiently (429, 5xx, timeouts).",
        cli=("--retries",),
        minimum=0,
    ),
    _s(
        "retry_backoff",
        float,
        0.5,
        "Seconds before the first retry; doubled for each later one.",
        cli=("--retry-backoff",),
        minimum=0,
    ),
    _s(
        "max_retry_wait",
        float,
        60.0,
        "Longest wait before a retry, in seconds, when a server's Retry-After asks for more (the run's "
        "remaining time caps it too).",
        cli=("--max-retry-wait",),
        minimum=0,
    ),
    # safety
    _s(
        "approve",
        bool,
        False,
        "Show each model-written block and run it only when the user answers y.",
        cli=("--approve",),
        magic=("--approve",),
    ),
    _s(
        "isolation",
        str,
        None,
        "Where model code runs: None (this process), kernel (a sandboxed kernel), kernel-audit (weaker, see README).",
        cli=("--isolation",),
        magic=("--isolation",),
        # No choices: the modes are core.repl.register_isolation's, checked when the RLM is made.
        flag_values={"--isolated": "kernel"},
    ),
    _s(
        "isolation_limits",
        dict,
        None,
        f"Limits of every isolated kernel: {', '.join(ISOLATION_LIMITS)} (JSON object).",
        cli=("--isolation-limits",),
    ),
    # what the model is told, and what it may reuse
    _s(
        "sub_calls",
        bool,
        True,
        "Whether model code may call sub-models and child RLMs (llm_query, rlm_query and their batched forms); "
        "False is the paper's no-sub-calls ablation: the REPL and code alone.",
        flag_values={"--no-sub-calls": False},
    ),
    _s(
        "instructions",
        str,
        None,
        "Domain guidance added to every node's system prompt (in a cell: --instructions NAME of a notebook string).",
        env="RLM_INSTRUCTIONS",
        cli=("--instructions",),
    ),
    _s(
        "cache",
        str,
        None,
        "Reuse model replies: memory (this process), disk (~/.cache/rlm_kernel/responses) or a directory.",
        env="RLM_CACHE",
        cli=("--cache-in",),
        magic=("--cache-in",),
        flag_values={"--cache": "disk"},
    ),
    _s(
        "cache_max_mb",
        float,
        1024.0,
        "Size bound of a disk response cache in MB: past it, the least recently used replies are removed.",
        env="RLM_CACHE_MAX_MB",
        cli=("--cache-max-mb",),
        minimum=0,
    ),
    _s(
        "session_tokens",
        int,
        4000,
        "Tokens of earlier questions a session keeps in the root prompt; older turns are compacted past it.",
        cli=("--session-tokens",),
        magic=("--session-tokens",),
        minimum=0,
    ),
    # records
    _s(
        "trace_path", str, None, "Append the run's events to this JSONL file.", cli=("--trace-out",), magic=("--trace",)
    ),
    _s(
        "telemetry",
        str,
        None,
        "Send each run as OpenTelemetry spans: otel (to $OTEL_EXPORTER_OTLP_ENDPOINT, default localhost:4318; "
        "on by itself when that variable is set; needs the otel extra), or off (not even then).",
        env="RLM_TELEMETRY",
        cli=("--telemetry",),
        magic=("--telemetry",),
        choices=("otel", "off"),
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def resolve(given: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every setting: the given value (None counts as not given), else its environment variable, else its default."""
    unknown = set(given) - set(BY_NAME)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        value = given.get(setting.name)
        if value is None and setting.env and environ.get(setting.env):
            value = setting.parse(environ[setting.env])
        values[setting.name] = setting.check(setting.default if value is None else value)
    limits = values["isolation_limits"] or {}
    unknown_limits = set(limits) - set(ISOLATION_LIMITS)
    if unknown_limits:
        raise ConfigError(f"unknown isolation limits {sorted(unknown_limits)}; known: {', '.join(ISOLATION_LIMITS)}")
    return values


def source(name: str, given: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """Where a setting's value comes from: "given", "$VARIABLE" or "default"."""
    environ = os.environ if environ is None else environ
    setting = BY_NAME[name]
    if given.get(name) is not None:
        return "given"
    if setting.env and environ.get(setting.env):
        return f"${setting.env}"
    return "default"


def recorded(values: Mapping[str, Any], transports: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings as a trace records them: secrets only as whether they were set.

    `transports`: how each model was actually called ({"model": "direct", "sub_model": "litellm"}),
    recorded beside `transport` (which may say "auto").
    """
    settings = {s.name: (values.get(s.name) is not None if s.secret else values.get(s.name)) for s in SETTINGS}
    return {**settings, "transports": dict(transports)} if transports is not None else settings
