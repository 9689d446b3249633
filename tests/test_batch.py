"""Batches over HTTP: one concurrency bound, results in order, budgets per question or for the whole batch."""

from __future__ import annotations

import asyncio

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.errors import ConfigError
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block

# Every feature works the same on both transports (the server sees the same requests).
pytestmark = pytest.mark.usefixtures("each_transport")


def _one_root_one_sub() -> Recorder:
    """Each question: one root call whose block makes one sub-call and submits its reply."""
    return Recorder(lambda messages: block("FINAL(llm_query('q:' + context))"))


def test_a_batch_returns_results_in_order_each_with_its_own_usage_under_one_bound(each_transport):
    with ModelServer(_one_root_one_sub(), latency_ms=100) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        rlm.completion("warm", "up")
        results = rlm.batch([(f"c{i}", f"question {i}") for i in range(24)], concurrency=8)
        stats = server.stats()
    assert stats["requests"] == 2 + 48
    assert [r.answer for r in results] == [f"sub:q:c{i}" for i in range(24)]
    assert [r.query for r in results] == [f"question {i}" for i in range(24)]
    assert all(r.status == "done" and r.usage.llm_calls == 2 for r in results)
    # The bound holds across questions and their sub-calls, and is reached: the server's count, not a wall time.
    assert stats["max_in_flight"] == 8


def test_a_budget_for_the_whole_batch_stops_the_questions_past_it():
    with ModelServer(_one_root_one_sub()) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        results = rlm.batch([(f"c{i}", f"q{i}") for i in range(6)], concurrency=1, max_llm_calls=5)
        assert server.stats()["requests"] == 5
    assert [r.status for r in results[:2]] == ["done", "done"]
    # the fifth call is question 2's root call; its sub-call is refused, and the refusal is what it submits
    assert "budget exhausted (max_llm_calls)" in results[2].answer
    assert [r.status for r in results[3:]] == ["budget"] * 3
    assert sum(r.usage.llm_calls for r in results) == 5


def test_a_budget_per_question_is_the_rlms_own():
    with ModelServer(_one_root_one_sub()) as server:
        results = RLM(model="openai/policy", api_base=server.url, max_llm_calls=1).batch([("a", "q"), ("b", "q")])
        assert server.stats()["requests"] == 2  # each question's root call; its sub-call is refused
    assert all(r.usage.llm_calls == 1 and "budget exhausted" in str(r.answer) for r in results)


def test_a_question_that_cannot_start_fails_alone():
    with ModelServer(_one_root_one_sub()) as server:
        results = RLM(model="openai/policy", api_base=server.url).batch([("a", "q"), (object(), "bad"), ("c", "q")])
    assert [r.status for r in results] == ["done", "error", "done"]
    assert "context" in results[1].error
    with pytest.raises(ConfigError, match="not a \\(context, query\\) pair"):
        RLM(model="openai/policy").batch(["just a string"])
    with pytest.raises(ConfigError, match="unknown batch limits"):
        RLM(model="openai/policy").batch([("a", "q")], max_dollars=1)


def test_abatch_and_concurrent_acompletions_are_not_held_to_the_default_thread_pool():
    async def both(rlm):
        batch = await rlm.abatch([(f"c{i}", "q") for i in range(4)])
        many = await asyncio.gather(*(rlm.acompletion(f"d{i}", "q") for i in range(16)))
        return batch, many

    with ModelServer(_one_root_one_sub(), latency_ms=200) as server:
        batch, many = asyncio.run(both(RLM(model="openai/policy", api_base=server.url, concurrency=16)))
        stats = server.stats()
    assert [r.answer for r in batch] == [f"sub:q:c{i}" for i in range(4)]
    assert [r.answer for r in many] == [f"sub:q:d{i}" for i in range(16)]
    assert stats["max_in_flight"] == 16  # asyncio's default pool would allow min(32, cores + 4)
