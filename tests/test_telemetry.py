"""OpenTelemetry spans of a run (RLM(telemetry="otel")), read back from the SDK's in-memory exporter.

The run is real end to end (the direct transport to a local model server that counts the tokens it reports);
the exporter is the SDK's own test exporter. tests/test_telemetry_phoenix.py sends the same kind of run to a
real Phoenix server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is in the test lock; not installed here")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from rlm_kernel import RLM
from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.telemetry import telemetry_for
from rlm_kernel.models.server import ModelServer
from rlm_kernel.telemetry import TextPolicy, set_tracer_provider
from tests.conftest import repl
from tests.telemetry_support import SECRET, CountingPolicy, run_settings

ROOT = Path(__file__).resolve().parents[1]


def by_name(found: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in found}


def children(found: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return sorted(
        (s for s in found if s.parent is not None and s.parent.span_id == parent.context.span_id),
        key=lambda s: s.start_time or 0,
    )


def test_a_depth_2_run_is_one_trace_of_nodes_model_calls_blocks_and_sub_calls(spans):
    policy = CountingPolicy()
    with ModelServer(policy) as server:
        result = RLM(**run_settings(server.url), telemetry="otel").completion("x" * 50, "root")
    found = spans.get_finished_spans()
    assert len({s.context.trace_id for s in found}) == 1, "one run, one trace"
    named = by_name(found)
    root = named["rlm n0"]
    assert root.parent is None and root.attributes["openinference.span.kind"] == "AGENT"
    assert root.attributes["rlm.status"] == result.status == "done"
    assert root.attributes["output.value"] == "root answer" and root.attributes["input.value"] == "root"
    assert [s.name for s in children(found, root)] == [
        "chat openai/policy",
        "code 0.0",
        "chat openai/policy",
        "code 1.0",
    ]
    block = children(found, root)[1]
    assert (
        block.attributes["openinference.span.kind"] == "TOOL" and "rlm_query_batched" in block.attributes["input.value"]
    )
    under_block = children(found, block)
    assert sorted(s.attributes["openinference.span.kind"] for s in under_block) == ["CHAIN", "CHAIN", "LLM"]
    for chain in (s for s in under_block if s.attributes["openinference.span.kind"] == "CHAIN"):
        (child,) = children(found, chain)
        assert child.name == f"rlm {chain.attributes['rlm.child_id']}" and child.attributes["rlm.depth"] == 1
    # Token counts: the model-call spans sum to what the server reported, and to the run's usage.
    calls = [s for s in found if s.attributes["openinference.span.kind"] == "LLM"]
    assert len(calls) == result.usage.llm_calls == policy.requests + policy.failures  # the failed call too
    assert sum(s.attributes.get("llm.token_count.prompt", 0) for s in calls) == policy.input_tokens
    assert sum(s.attributes.get("gen_ai.usage.output_tokens", 0) for s in calls) == policy.output_tokens
    assert sum(s.attributes.get("llm.cost.total", 0) for s in calls) == pytest.approx(result.usage.cost_usd)
    (failed_call,) = [s for s in calls if s.status.status_code is StatusCode.ERROR]
    assert "the model server broke" in failed_call.attributes["rlm.error"]
    assert result.usage.cost_usd > 0
    first = children(found, root)[0]
    assert first.attributes["gen_ai.request.temperature"] == 0.25 and first.attributes["rlm.retries"] == 0
    assert first.attributes["rlm.streamed"] is False and first.attributes["gen_ai.provider.name"] == "openai"


def test_spans_start_and_end_at_the_events_times_and_nest_inside_their_parents(spans):
    with ModelServer(CountingPolicy()) as server:
        result = RLM(**run_settings(server.url), telemetry="otel").completion("x" * 50, "root")
    found = spans.get_finished_spans()
    events = {(e.kind, e.node_id): e for e in result.trace.events}
    for node in result.trace.walk():
        span = by_name(found)[f"rlm {node.id}"]
        assert span.start_time == int(events["call_start", node.id].time * 1e9)
        assert span.end_time == int(events["call_end", node.id].time * 1e9)
    ids = {s.context.span_id: s for s in found}
    for span in found:
        if span.parent is not None:
            parent = ids[span.parent.span_id]
            assert parent.start_time <= span.start_time <= span.end_time <= parent.end_time, span.name


def test_a_failed_child_and_a_failed_block_are_errors_with_their_reason(spans):
    with ModelServer(CountingPolicy()) as server:
        RLM(**run_settings(server.url), telemetry="otel").completion("x" * 50, "root")
    failed = next(
        s
        for s in spans.get_finished_spans()
        if s.attributes.get("input.value") == "child fails" and s.attributes["openinference.span.kind"] == "AGENT"
    )
    assert failed.status.status_code is StatusCode.ERROR and failed.status.description.startswith("error: model call")
    assert failed.attributes["rlm.status"] == "error"
    with ModelServer(lambda m: repl("1/0") if len(m) == 2 else repl("FINAL('x')")) as server:
        RLM(model="openai/policy", api_base=server.url, telemetry="otel").completion("c", "q")
    block = by_name(spans.get_finished_spans())["code 0.0"]
    assert block.status.status_code is StatusCode.ERROR and "ZeroDivisionError" in block.attributes["rlm.error"]


def test_no_planted_secret_reaches_a_span_and_the_context_is_only_described(spans):
    context = "the context's own text, never sent " * 40
    with ModelServer(CountingPolicy()) as server:
        RLM(**run_settings(server.url), telemetry="otel").completion(context, "root")
    dumped = json.dumps([dict(s.attributes) | {"name": s.name} for s in spans.get_finished_spans()], default=str)
    assert SECRET not in dumped and "key [redacted]" in dumped  # the code printed it: redacted in the events already
    root = by_name(spans.get_finished_spans())["rlm n0"]
    assert root.attributes["rlm.context.length"] == len(context) and "rlm.context.preview" not in root.attributes
    assert "the context's own text" not in json.dumps(dict(root.attributes))


def test_texts_are_cut_to_the_configured_size_or_left_out(spans):
    with ModelServer(CountingPolicy()) as server:
        RLM(**run_settings(server.url), telemetry="otel").completion("x" * 50, "root")
    found = spans.get_finished_spans()
    long_texts = [v for s in found for k, v in s.attributes.items() if isinstance(v, str) and k != "metadata"]
    assert max(len(v) for v in long_texts) < 300 + 40  # the cut, and how much was left out
    assert any(v.endswith("more characters]") for v in long_texts)
    spans.clear()
    set_tracer_provider(_provider(spans), TextPolicy(max_chars=300, inputs=False, outputs=False))
    with ModelServer(CountingPolicy()) as server:
        RLM(**run_settings(server.url), telemetry="otel").completion("x" * 50, "root")
    found = spans.get_finished_spans()
    assert found and not any(
        k.startswith(("input.", "output.", "llm.input_messages", "llm.output_messages"))
        for s in found
        for k in s.attributes
    )
    assert sum(s.attributes.get("llm.token_count.total", 0) for s in found) > 0  # metadata still sent


def _provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_text_policy_reads_openinference_variables():
    policy = TextPolicy.from_env({"RLM_OTEL_MAX_CHARS": "50", "OPENINFERENCE_HIDE_OUTPUTS": "true"})
    assert policy == TextPolicy(50, inputs=True, outputs=False)
    assert TextPolicy(max_chars=3).cut("abcdef") == "abc… [3 more characters]"


def test_a_batch_is_one_trace_per_question_each_linked_to_the_batch_span(spans):
    with ModelServer(lambda m: repl("FINAL(context)")) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, telemetry="otel")
        results = rlm.batch([("a", "q1"), ("b", "q2"), ("c", "q3")], concurrency=3)
    assert [r.answer for r in results] == ["a", "b", "c"]
    found = spans.get_finished_spans()
    (batch,) = [s for s in found if s.name == "rlm batch"]
    roots = [s for s in found if s.name == "rlm n0"]
    assert len(roots) == 3 and len({s.context.trace_id for s in roots} | {batch.context.trace_id}) == 4
    for root in roots:
        assert root.parent is None and [link.context.span_id for link in root.links] == [batch.context.span_id]
        assert len([s for s in found if s.context.trace_id == root.context.trace_id]) == 3  # node, call, block
    assert batch.attributes["rlm.batch.questions"] == 3


def test_a_run_given_a_traceparent_joins_that_trace(spans):
    """How a run on a Ray worker joins its driver's trace: a node span's traceparent, carried to the worker."""
    from rlm_kernel.telemetry import default_telemetry

    telemetry = default_telemetry()
    driver, carried = telemetry.run(), []

    def carry(event):  # while the driver's root runs: what a Ray task's arguments would carry
        if event.kind == "iteration":
            carried.append(driver.traceparent("n0"))

    with ModelServer(lambda m: repl("FINAL('here')")) as server:
        RLM(model="openai/policy", api_base=server.url, on_event=[driver, carry]).completion("c", "driver")
        worker = telemetry.run(parent=carried[0])
        RLM(model="openai/policy", api_base=server.url, on_event=worker).completion("c", "worker")
    found = spans.get_finished_spans()
    driver_root = next(s for s in found if s.attributes.get("input.value") == "driver")
    joined = next(s for s in found if s.attributes.get("input.value") == "worker")
    assert joined.context.trace_id == driver_root.context.trace_id
    assert joined.parent.span_id == driver_root.context.span_id
    assert driver.traceparent("n0") is None  # an ended node is not kept


def test_the_setting_and_the_variable_choose_the_plug_in(monkeypatch):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert telemetry_for(None) is None
    assert telemetry_for(None, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) is not None
    assert telemetry_for("off", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) is None
    with pytest.raises(ConfigError, match="telemetry must be one of otel, off"):
        RLM(model="openai/policy", api_base="http://127.0.0.1:9/v1", telemetry="jaeger")
    assert RLM(model="openai/policy", api_base="http://127.0.0.1:9/v1").telemetry is None


def _env(**more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "RLM_"))}
    return {**env, "PYTHONPATH": str(ROOT), **more}


def _rlm_run(tmp_path: Path, url: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    doc = tmp_path / "doc.txt"
    doc.write_text("some text\n")
    command = ["run", "--context", str(doc), "--model", "openai/policy", "--api-base", url, "--query", "q", *extra]
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "rlm_kernel.cli", *command],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def _imported(stderr: str) -> set[str]:
    return {line.split("|")[-1].strip().split(".")[0] for line in stderr.splitlines() if "import time:" in line}


def test_off_nothing_of_opentelemetry_is_imported(tmp_path):
    with ModelServer(lambda m: repl("FINAL('ok')")) as server:
        run = _rlm_run(tmp_path, server.url, _env())
    assert run.returncode == 0, run.stderr[-2000:]
    assert "opentelemetry" not in _imported(run.stderr) and "openinference" not in _imported(run.stderr)


def test_an_unreachable_collector_costs_one_warning_line_and_no_time(tmp_path):
    with ModelServer(lambda m: repl("FINAL('ok')")) as server:
        started = time.monotonic()
        # Port 9 (discard) on this host: nothing listens, every export is refused.
        run = _rlm_run(tmp_path, server.url, _env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"))
        seconds = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-2000:]
    assert "opentelemetry" in _imported(run.stderr)
    said = [line for line in run.stderr.splitlines() if "import time:" not in line]
    assert len(said) == 1 and said[0].startswith("rlm_kernel: cannot send spans to http://127.0.0.1:9/v1/traces ("), (
        said
    )
    assert said[0].endswith("); runs go on without them")
    assert seconds < 30, seconds  # a hang guard: the exporter waits at most 3 s, and only once
