"""The response cache, measured at the server: a re-run makes zero requests and costs nothing."""

from __future__ import annotations

import json

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.cache import cache_key
from rlm_kernel.core.errors import ConfigError
from rlm_kernel.models.policies import register_policy
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block, turn

# Every feature works the same on both transports (the server sees the same requests).
pytestmark = pytest.mark.usefixtures("each_transport")


def _policy() -> Recorder:
    def root(messages):
        if turn(messages) == 0:
            return block("x = llm_query('hello')\nprint(x)")
        return block("FINAL(x)")

    return Recorder(root)


def test_a_rerun_is_answered_from_the_disk_cache_with_no_request_and_no_cost(tmp_path):
    with ModelServer(_policy()) as server:
        settings = dict(model="openai/policy", api_base=server.url, cache=str(tmp_path / "responses"))
        first = RLM(**settings).completion("some context", "q")
        served = server.stats()["requests"]
        again = RLM(**settings).completion("some context", "q")  # a new RLM, as a re-run cell makes
        assert server.stats()["requests"] == served == 3
    assert first.answer == again.answer == "sub:hello"
    assert (first.usage.llm_calls, first.usage.cached_calls) == (3, 0)
    u = again.usage
    assert (u.llm_calls, u.cached_calls, u.input_tokens, u.output_tokens, u.cost_usd) == (0, 3, 0, 0, 0.0)
    root = again.trace.root
    assert [it.usage.cached_calls for it in root.iterations] == [1, 1]
    assert root.subcalls[0].usage.cached_calls == 1
    assert "(+3 cached)" in again.summary()
    iteration = next(e for e in again.trace.events if e.kind == "iteration")
    assert json.loads(iteration.to_json())["data"]["usage"]["cached_calls"] == 1  # in the JSONL trace too
    assert len(list((tmp_path / "responses").glob("*.json"))) == 3


def test_the_key_covers_model_messages_sampling_parameters_and_base_url(tmp_path):
    messages = [{"role": "user", "content": "hi"}]
    base = cache_key("openai/m", messages, {"temperature": 0}, "http://a/v1")
    assert base == cache_key("openai/m", [dict(messages[0])], {"temperature": 0}, "http://a/v1")
    for other in (
        cache_key("openai/n", messages, {"temperature": 0}, "http://a/v1"),
        cache_key("openai/m", [{"role": "user", "content": "hi!"}], {"temperature": 0}, "http://a/v1"),
        cache_key("openai/m", messages, {"temperature": 0.5}, "http://a/v1"),
        cache_key("openai/m", messages, {"temperature": 0}, "http://b/v1"),
    ):
        assert other != base
    with ModelServer(_policy()) as one, ModelServer(_policy()) as two:
        where = str(tmp_path)
        RLM(model="openai/policy", api_base=one.url, cache=where).completion("c", "q")
        RLM(model="openai/policy", api_base=two.url, cache=where).completion("c", "q")  # another server
        RLM(model="openai/policy", api_base=one.url, cache=where, temperature=0.7).completion("c", "q")
        assert (one.stats()["requests"], two.stats()["requests"]) == (6, 3)


def test_memory_cache_is_shared_by_the_rlms_of_a_process_and_off_by_default():
    with ModelServer(_policy()) as server:
        RLM(model="openai/policy", api_base=server.url, cache="memory").completion("memory ctx", "q")
        RLM(model="openai/policy", api_base=server.url, cache="memory").completion("memory ctx", "q")
        assert server.stats()["requests"] == 3
        RLM(model="openai/policy", api_base=server.url).completion("memory ctx", "q")
        assert server.stats()["requests"] == 6


def test_a_cache_directory_that_cannot_be_made_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot use .* as a response cache"):
        RLM(model="openai/policy", cache=str(blocker / "sub"))


def test_a_reply_cut_at_its_output_cap_never_answers_a_call_with_another_cap(tmp_path):
    asked: list[str] = []

    def sub_model(messages):
        asked.append(str(messages[-1]["content"]))
        return "word " * 200  # 1,000 characters: about 250 tokens

    root = register_policy(lambda m: block("print(llm_query('tell me'))") if turn(m) == 0 else block("FINAL(1)"))
    settings = dict(model=root, sub_model=register_policy(sub_model), cache=str(tmp_path / "responses"))

    def sub_calls_made(**budget) -> int:
        asked.clear()
        RLM(**settings, **budget).completion("c", "q")
        return len(asked)

    # The scripted provider cuts a reply at its cap (4 characters a token), as a provider would.
    assert sub_calls_made(max_tokens=10**6, max_output_tokens=30) == 1
    assert sub_calls_made(max_tokens=10**6, max_output_tokens=30) == 0  # the same cap: the same cut reply
    assert sub_calls_made() == 1  # no cap: the cut reply is not what this call gets
    assert sub_calls_made(max_tokens=10**6, max_output_tokens=4096) == 0  # the whole reply fits this cap
    assert sub_calls_made(max_tokens=10**6, max_output_tokens=100) == 1  # and not this one
