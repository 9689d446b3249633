"""The OpenTelemetry plug-in: a tracer provider that exports over OTLP/HTTP, off the model-call loop.

Spans are batched (BatchSpanProcessor) and sent by its own thread; a collector that cannot be reached costs
the run nothing but one warning line, once: the exporter's own retry messages are kept out of the user's
stderr, and its wait is bounded so that the process's exit is not held up either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode

from rlm_kernel.core.trace import EventHandler
from rlm_kernel.telemetry.attributes import CHAIN, KIND, TextPolicy
from rlm_kernel.telemetry.spans import RunSpans, context_of, traceparent

TRACER_NAME = "rlm_kernel"
DEFAULT_ENDPOINT = "http://localhost:4318"
# The exporter's own wait for a collector, unless OTEL_EXPORTER_OTLP_TIMEOUT says otherwise: short, since it
# runs in the exporting thread (and once more at exit, when the last spans are flushed).
EXPORT_TIMEOUT_S = 3.0
PAUSE_AFTER_FAILURE_S = 30.0


class WarnOnce(SpanExporter):
    """An exporter whose failures are one line on stderr, the first time only.

    After a failure, batches are dropped without trying for `pause_s`: the exporter's retries would otherwise
    hold each later batch (and the last one, flushed at exit) for its whole timeout.
    """

    def __init__(self, exporter: SpanExporter, where: str, pause_s: float = PAUSE_AFTER_FAILURE_S) -> None:
        self.exporter, self.where, self.pause_s = exporter, where, pause_s
        self.warned = False
        self.failed_at: float | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.failed_at is not None and time.monotonic() - self.failed_at < self.pause_s:
            return SpanExportResult.FAILURE
        try:
            result = self.exporter.export(spans)
        except Exception as exc:  # an exporter must never raise into the processor's thread
            result, why = SpanExportResult.FAILURE, f"{type(exc).__name__}: {exc}"
        else:
            why = "the collector did not accept them"
        self.failed_at = time.monotonic() if result is SpanExportResult.FAILURE else None
        if result is SpanExportResult.FAILURE and not self.warned:
            self.warned = True
            print(f"rlm_kernel: cannot send spans to {self.where} ({why}); runs go on without them", file=sys.stderr)
        return result

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)


def otlp_exporter() -> tuple[SpanExporter, str]:
    """The OTLP/HTTP exporter, configured by the standard OTEL_EXPORTER_OTLP_* variables; where it sends."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # Its retry messages go to the `opentelemetry.exporter` loggers: WarnOnce says it once instead.
    logging.getLogger("opentelemetry.exporter.otlp").addHandler(logging.NullHandler())
    logging.getLogger("opentelemetry.exporter.otlp").propagate = False
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")
    endpoint = traces or f"{base}/v1/traces"
    timeout = None if os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT") else EXPORT_TIMEOUT_S
    return OTLPSpanExporter(endpoint=endpoint, timeout=timeout), endpoint


class OTelTelemetry:
    """The `otel` telemetry plug-in (core.telemetry.Telemetry): one RunSpans handler per run."""

    def __init__(self, provider: trace.TracerProvider, text: TextPolicy | None = None) -> None:
        self.use(provider, text)

    def use(self, provider: trace.TracerProvider, text: TextPolicy | None = None) -> None:
        """Send later runs' spans to `provider`, with `text` (default: from the environment)."""
        self.provider = provider
        self.tracer = provider.get_tracer(TRACER_NAME)
        self.text = text or TextPolicy.from_env()

    def run(self, *, parent: str | None = None, link: str | None = None) -> EventHandler:
        return RunSpans(self.tracer, self.text, parent=parent, link=link)

    @contextlib.contextmanager
    def batch(self, size: int) -> Iterator[str | None]:
        attributes: dict[str, str | int] = {
            KIND: CHAIN,
            "gen_ai.operation.name": "invoke_agent",
            "rlm.batch.questions": size,
        }
        span = self.tracer.start_span("rlm batch", attributes=attributes)
        try:
            yield traceparent(span)
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        else:
            span.set_status(Status(StatusCode.OK))
        finally:
            span.end()

    def join(self, traceparent: str | None) -> bool:
        """Whether `traceparent` names a span a run can join (for a worker handed one by its driver)."""
        return context_of(traceparent) is not None


_default: OTelTelemetry | None = None
_default_lock = threading.Lock()


def default_telemetry() -> OTelTelemetry:
    """The process's plug-in: the application's own SDK tracer provider when it set one, else one of ours."""
    global _default
    with _default_lock:
        if _default is None:
            current = trace.get_tracer_provider()
            if isinstance(current, TracerProvider):
                _default = OTelTelemetry(current)
            else:
                service = os.environ.get("OTEL_SERVICE_NAME", "rlm_kernel")
                provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
                exporter, where = otlp_exporter()
                provider.add_span_processor(BatchSpanProcessor(WarnOnce(exporter, where)))
                _default = OTelTelemetry(provider)
        return _default


def set_tracer_provider(provider: trace.TracerProvider, text: TextPolicy | None = None) -> OTelTelemetry:
    """Send every later run's spans to `provider` (tests: an InMemorySpanExporter's) instead of the default."""
    global _default
    with _default_lock:
        if _default is None:
            _default = OTelTelemetry(provider, text)
        else:  # the object core already holds (RLMs made before this call switch too)
            _default.use(provider, text)
        return _default
