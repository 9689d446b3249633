"""OpenTelemetry for work on Ray: the spans of a batch's questions and of a run's fan-out children are made on the
driver from the events the workers send back, as an in-process run's are from its own, so workers need no
collector of their own."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is in the test lock; not installed here")

from rlm_kernel import RLM
from rlm_kernel.distributed import RayExecutor
from rlm_kernel.models.server import ModelServer
from tests.conftest import question_of, repl

pytestmark = pytest.mark.usefixtures("cluster")


@pytest.mark.parametrize("copies", ["per_question", "per_node"])
def test_a_batch_on_ray_is_one_trace_per_question_each_linked_to_the_batch_span(spans, copies):
    with ModelServer(lambda m: repl("FINAL(context)")) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, telemetry="otel")
        executor = RayExecutor(num_cpus=0.25, context_copies=copies)
        results = rlm.batch([("a", "q1"), ("b", "q2"), ("c", "q3")], executor=executor, concurrency=3)
    assert [r.answer for r in results] == ["a", "b", "c"]
    found = spans.get_finished_spans()
    (batch,) = [s for s in found if s.name == "rlm batch"]
    roots = [s for s in found if s.name == "rlm n0"]
    assert len(roots) == 3 and len({s.context.trace_id for s in roots} | {batch.context.trace_id}) == 4
    for root in roots:
        assert root.parent is None and [link.context.span_id for link in root.links] == [batch.context.span_id]
        assert len([s for s in found if s.context.trace_id == root.context.trace_id]) == 3  # node, call, block
        assert root.start_time is not None and batch.start_time is not None and root.start_time >= batch.start_time


def fan_out(messages):
    if messages[0]["role"] != "system":
        return "sub"
    if question_of(messages).startswith("child"):
        return repl("FINAL('child ' + context)")
    return repl("FINAL(rlm_query_batched([('x', 'child 1'), ('y', 'child 2')]))")


def test_a_runs_children_on_ray_are_spans_of_its_trace(spans):
    with ModelServer(fan_out) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, max_depth=2, telemetry="otel", executor="ray")
        result = rlm.completion("text", "root")
    assert result.answer == ["child x", "child y"]
    found = spans.get_finished_spans()
    (root,) = [s for s in found if s.name == "rlm n0"]
    kids = [s for s in found if s.name.startswith("rlm ") and s.name != "rlm n0"]
    assert len(kids) == 2, sorted(s.name for s in found)
    assert all(s.context.trace_id == root.context.trace_id for s in found)
