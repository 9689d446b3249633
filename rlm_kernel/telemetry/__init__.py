"""OpenTelemetry spans of every run (`RLM(telemetry="otel")`, or OTEL_EXPORTER_OTLP_ENDPOINT set).

A view of the event stream, like the JSONL writer: it reads the run's redacted events and sends them as one
trace a run, with GenAI and OpenInference attributes, to any OTLP/HTTP endpoint (Phoenix, Langfuse, MLflow,
Jaeger, an OpenTelemetry Collector). Needs the `otel` extra: pip install 'rlm_kernel[otel]'.
The package root registers it with core (core.telemetry); nothing here is imported while it is off.
"""

from __future__ import annotations

from rlm_kernel.telemetry.attributes import TextPolicy
from rlm_kernel.telemetry.otel import OTelTelemetry, default_telemetry, set_tracer_provider
from rlm_kernel.telemetry.spans import RunSpans

__all__ = ["OTelTelemetry", "RunSpans", "TextPolicy", "default_telemetry", "set_tracer_provider"]
