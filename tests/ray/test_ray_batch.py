"""Batches on a real local Ray cluster of two nodes, against a local server that counts requests and calls in flight."""

from __future__ import annotations

import pytest

from rlm_kernel import RLM
from rlm_kernel.distributed import RayExecutor
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block

pytestmark = pytest.mark.usefixtures("cluster")


def _one_root_one_sub() -> Recorder:
    return Recorder(lambda messages: block("FINAL(llm_query('q:' + context))"))


def test_a_batch_on_ray_returns_results_in_order_with_status_usage_and_trace():
    with ModelServer(_one_root_one_sub(), latency_ms=50) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        results = rlm.batch([(f"c{i}", f"question {i}") for i in range(6)], executor="ray", concurrency=3)
        stats = server.stats()
    assert [r.answer for r in results] == [f"sub:q:c{i}" for i in range(6)]
    assert [r.query for r in results] == [f"question {i}" for i in range(6)]
    assert all(r.status == "done" and r.usage.llm_calls == 2 for r in results)
    assert all(r.trace.root_start() is not None for r in results)
    assert stats["requests"] == 12
    assert stats["max_in_flight"] <= 3
