"""The response cache against a server that counts requests (issue 23 item 8): identical calls in flight are
joined, sampled calls stay samples, and a disk cache keeps to its size."""

from __future__ import annotations

import time

import pytest

from rlm_kernel import RLM
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block, question, turn

pytestmark = pytest.mark.usefixtures("each_transport")


def _batched(prompts: list[str]) -> Recorder:
    def root(messages):
        if turn(messages) == 0:
            return block(f"replies = llm_query_batched({prompts!r})")
        return block("FINAL(replies)")

    counter = iter(range(10_000))
    return Recorder(root, sub=lambda prompt: f"{prompt}#{next(counter)}")  # each request gets its own reply


def test_32_identical_prompts_in_flight_make_one_request(tmp_path):
    policy = _batched(["same question"] * 32)
    with ModelServer(policy, latency_ms=300) as server:
        result = RLM(model="openai/policy", api_base=server.url, cache="memory").completion("c", "q")
        subs = [m for m in policy.requests if m[0]["role"] != "system"]
        assert len(subs) == 1 and server.stats()["requests"] == 3
    assert len(set(result.answer)) == 1 and result.answer[0].startswith("same question#")
    assert (result.usage.llm_calls, result.usage.cached_calls) == (3, 31)


def test_sampled_calls_stay_samples_and_a_rerun_gets_the_same_samples_back(tmp_path):
    policy = _batched(["draw a card"] * 8)
    with ModelServer(policy) as server:
        settings = dict(model="openai/policy", api_base=server.url, cache=str(tmp_path / "c"), sub_temperature=0.9)
        first = RLM(**settings).completion("c", "q")
        assert len(set(first.answer)) == 8  # eight samples, eight requests
        served = server.stats()["requests"]
        again = RLM(**settings).completion("c", "q")
        assert server.stats()["requests"] == served  # the rerun: every sample from the cache
    assert again.answer == first.answer and again.usage.cached_calls == 10


def test_a_disk_cache_keeps_to_its_size_and_evicts_the_least_recently_used(tmp_path):
    folder = tmp_path / "c"

    def root(messages):  # each question's sub-call is echoed back: about 3 kB a reply on disk
        return block(f"r = llm_query({question(messages)!r} * 300)") if turn(messages) == 0 else block("FINAL(r)")

    with ModelServer(Recorder(root, sub=lambda prompt: prompt)) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, cache=str(folder), cache_max_mb=0.02)
        rlm.completion("c", "first one")
        first = list(folder.glob("*.json"))
        time.sleep(0.05)
        for n in range(8):
            rlm.completion("c", f"question {n}")
    files = list(folder.glob("*.json"))
    assert 0 < sum(f.stat().st_size for f in files) <= 20_000
    assert first and not any(f.exists() for f in first)  # the least recently used went first
