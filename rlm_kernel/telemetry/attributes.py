"""The attributes of each span: GenAI semantic conventions and OpenInference's, from event fields only.

Both sets, so each tool shows a run natively: Phoenix and Arize read OpenInference (`openinference.span.kind`,
`llm.token_count.*`, `input.value`), Langfuse, MLflow, Datadog and Jaeger read `gen_ai.*`. Token counts go on
model-call spans only (a node's or a child's totals would be counted twice by a tool that sums its spans).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openinference.semconv.trace import OpenInferenceSpanKindValues as Kind
from openinference.semconv.trace import SpanAttributes as Oi

KIND = Oi.OPENINFERENCE_SPAN_KIND
AGENT, LLM, TOOL, CHAIN = Kind.AGENT.value, Kind.LLM.value, Kind.TOOL.value, Kind.CHAIN.value
# The sampling settings a root call_start records, as the request parameters of GenAI's conventions.
_REQUEST = {"temperature": "temperature", "top_p": "top_p", "seed": "seed"}
_TRUE = ("1", "true", "yes")

Attributes = dict[str, Any]


@dataclass(frozen=True)
class TextPolicy:
    """How much of prompts, code and replies spans carry: none (metadata only) or the first `max_chars`."""

    max_chars: int = 2000
    inputs: bool = True
    outputs: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TextPolicy:
        """RLM_OTEL_MAX_CHARS; OPENINFERENCE_HIDE_INPUTS / _OUTPUTS, as OpenInference's instrumentors read them."""
        environ = os.environ if environ is None else environ
        try:
            max_chars = max(0, int(environ.get("RLM_OTEL_MAX_CHARS", "2000")))
        except ValueError:
            max_chars = 2000
        hide_in = environ.get("OPENINFERENCE_HIDE_INPUTS", "").lower() in _TRUE
        hide_out = environ.get("OPENINFERENCE_HIDE_OUTPUTS", "").lower() in _TRUE
        return cls(max_chars, not hide_in, not hide_out)

    def cut(self, text: str) -> str:
        if len(text) <= self.max_chars:
            return text
        return f"{text[: self.max_chars]}… [{len(text) - self.max_chars:,} more characters]"

    def input(self, text: str | None) -> Attributes:
        if text is None or not self.inputs:
            return {}
        return {Oi.INPUT_VALUE: self.cut(text), Oi.INPUT_MIME_TYPE: "text/plain"}

    def output(self, text: str | None) -> Attributes:
        if text is None or not self.outputs:
            return {}
        return {Oi.OUTPUT_VALUE: self.cut(text), Oi.OUTPUT_MIME_TYPE: "text/plain"}

    def messages(self, prefix: str, messages: list[Mapping[str, Any]], allowed: bool) -> Attributes:
        """OpenInference's flattened messages (`llm.input_messages.0.message.role`, ...)."""
        if not allowed:
            return {}
        found: Attributes = {}
        for i, message in enumerate(messages):
            content = message.get("content")
            found[f"{prefix}.{i}.message.role"] = str(message.get("role", ""))
            found[f"{prefix}.{i}.message.content"] = self.cut(content if isinstance(content, str) else str(content))
        return found


def provider(model: str) -> str:
    """GenAI's provider name: the litellm prefix (openai/gpt-4o -> openai), else the model's own name's owner."""
    return model.split("/", 1)[0] if "/" in model else "openai"


def node_attributes(data: Mapping[str, Any], node_id: str, text: TextPolicy) -> Attributes:
    """An AGENT span's attributes at its call_start: the question, depth, model and the context's metadata."""
    context = data.get("context") or {}
    found: Attributes = {
        KIND: AGENT,
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "rlm",
        "gen_ai.agent.id": node_id,
        "gen_ai.request.model": data["model"],
        Oi.LLM_MODEL_NAME: data["model"],
        "rlm.node_id": node_id,
        "rlm.depth": data["depth"],
        "rlm.max_iterations": data.get("max_iterations", 0),
        # The context itself is never sent: what it is, not what it says (its preview is left out too).
        **{f"rlm.context.{k}": v for k, v in context.items() if k != "preview" and v is not None},
        **text.input(data.get("query")),
    }
    settings = data.get("settings")
    if settings:  # the root: the run's settings (secrets recorded only as set or not), as metadata
        found[Oi.METADATA] = json.dumps(settings, default=str, sort_keys=True)
        found["rlm.stream"] = bool(settings.get("stream"))
    return found


def end_attributes(data: Mapping[str, Any], text: TextPolicy) -> Attributes:
    found: Attributes = {"rlm.status": data["status"], "rlm.seconds": float(data.get("seconds") or 0.0)}
    if data.get("limit"):
        found["rlm.limit"] = data["limit"]
    if data.get("error"):
        found["rlm.error"] = text.cut(str(data["error"]))
    return {**found, **text.output(data.get("answer"))}


def request_attributes(settings: Mapping[str, Any], sub: bool) -> Attributes:
    """The request parameters of a root call (`sub`: a sub-model call), from the settings the root recorded."""
    prefix = "sub_" if sub else ""
    params: dict[str, Any] = {}
    for name in _REQUEST:
        value = settings.get(prefix + name)
        if value is None and sub:
            value = settings.get(name)
        if value is not None:
            params[name] = value
    extra = settings.get(f"{prefix}model_params") or (settings.get("model_params") if sub else None) or {}
    params.update(extra)
    found: Attributes = {f"gen_ai.request.{_REQUEST[k]}": v for k, v in params.items() if k in _REQUEST}
    if params:
        found[Oi.LLM_INVOCATION_PARAMETERS] = json.dumps(params, default=str, sort_keys=True)
    return found


def usage_attributes(usage: Mapping[str, Any]) -> Attributes:
    """Tokens and cost of one model call, in both conventions (cached and reasoning tokens when reported)."""
    prompt, completion = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    found: Attributes = {
        Oi.LLM_TOKEN_COUNT_PROMPT: prompt,
        Oi.LLM_TOKEN_COUNT_COMPLETION: completion,
        Oi.LLM_TOKEN_COUNT_TOTAL: prompt + completion,
        "gen_ai.usage.input_tokens": prompt,
        "gen_ai.usage.output_tokens": completion,
        "rlm.usage.llm_calls": int(usage.get("llm_calls", 0)),
        "rlm.usage.cached_calls": int(usage.get("cached_calls", 0)),
        "rlm.usage.counted_calls": int(usage.get("counted_calls", 0)),
    }
    cached, reasoning = usage.get("cached_tokens"), usage.get("reasoning_tokens")
    if cached is not None:
        found[Oi.LLM_TOKEN_COUNT_PROMPT_DETAILS_CACHE_READ] = int(cached)
        found["gen_ai.usage.cache_read.input_tokens"] = int(cached)
    if reasoning is not None:
        found[Oi.LLM_TOKEN_COUNT_COMPLETION_DETAILS_REASONING] = int(reasoning)
        found["gen_ai.usage.reasoning.output_tokens"] = int(reasoning)
    return {**found, **cost_attributes(usage)}


def cost_attributes(usage: Mapping[str, Any]) -> Attributes:
    """The cost as the run priced it; an unpriced call has none (a tool must not read it as free)."""
    if not usage.get("cost_known", True):
        return {"rlm.cost_known": False}
    cost = float(usage.get("cost_usd", 0.0))
    return {"rlm.cost_known": True, "rlm.cost_usd": cost, Oi.LLM_COST_TOTAL: cost}


def subtree_attributes(usage: Mapping[str, Any]) -> Attributes:
    """A child RLM's totals, on its sub-call span, under names no tool sums again."""
    found: Attributes = {
        f"rlm.subtree.{k}": usage[k] for k in ("llm_calls", "input_tokens", "output_tokens") if k in usage
    }
    if usage.get("cost_known", True):
        found["rlm.subtree.cost_usd"] = float(usage.get("cost_usd", 0.0))
    return found


def model_attributes(model: str, response_model: str | None = None) -> Attributes:
    return {
        KIND: LLM,
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider(model),
        "gen_ai.system": provider(model),
        "gen_ai.request.model": model,
        "gen_ai.response.model": response_model or model,
        Oi.LLM_MODEL_NAME: response_model or model,
        Oi.LLM_PROVIDER: provider(model),
    }
