"""The engine over real HTTP, against `rlm serve-model` on 127.0.0.1: litellm's path and the direct one."""

from __future__ import annotations

import threading
import time

import pytest

from rlm_kernel import RLM
from rlm_kernel.models.policies import ScriptedReplies
from rlm_kernel.models.server import ModelServer
from tests.conftest import repl


def _root_then_subs(root_replies):
    root = ScriptedReplies(root_replies)

    def policy(messages):
        if messages[0]["role"] == "system":
            return root(messages)
        return "sub:" + messages[-1]["content"]

    return policy


# litellm; the direct transport in OpenAI's format; the direct transport in Anthropic's (an `anthropic/` model,
# whose api_base is the server's root: the Messages API is at /v1/messages).
TRANSPORTS = pytest.mark.parametrize("transport", ["litellm", "direct", "anthropic"])


def _options(transport: str, server: ModelServer) -> dict:
    if transport == "anthropic":
        return {"model": "anthropic/policy", "api_base": server.url.removesuffix("/v1"), "transport": "direct"}
    return {"model": "openai/policy", "api_base": server.url, "transport": transport}


@TRANSPORTS
def test_32_batched_prompts_at_100ms_latency_run_concurrently(transport):
    policy = _root_then_subs(
        [repl("replies = llm_query_batched([f'p{i}' for i in range(32)])"), repl("FINAL(replies)")]
    )
    arrived = threading.Barrier(32, timeout=30)

    def all_at_once(messages):
        if messages[0]["role"] != "system":
            arrived.wait()  # a sub-call is answered only once all 32 are in flight: one at a time never gets here
        return policy(messages)

    with ModelServer(all_at_once) as server:
        rlm = RLM(concurrency=32, **_options(transport, server))
        result = rlm.completion("some context", "fan out")
        stats = server.stats()
    assert result.answer == [f"sub:p{i}" for i in range(32)]
    assert stats["max_in_flight"] == 32  # the server's own count, not a wall-clock time
    assert result.usage.llm_calls == 34 == stats["served"]
    assert result.usage.input_tokens > 0 and not result.usage.cost_known


@TRANSPORTS
def test_transient_faults_are_retried_and_counted_per_attempt(transport):
    policy = _root_then_subs([repl("FINAL(llm_query_batched(['a', 'b', 'c', 'd']))")])
    with ModelServer(policy, fail_rate=0.4, faults=("429", "500", "malformed"), seed=3) as server:
        result = RLM(retries=8, retry_backoff=0.01, **_options(transport, server)).completion("ctx", "q")
        stats = server.stats()
    assert result.answer == ["sub:a", "sub:b", "sub:c", "sub:d"]
    assert sum(stats["faults"].values()) > 0
    assert result.usage.llm_calls == stats["requests"]


@TRANSPORTS
def test_unreachable_server_fails_the_run_with_one_clear_line(transport):
    started = time.perf_counter()
    options = {"model": "openai/none", "api_base": "http://127.0.0.1:9/v1", "transport": transport}
    if transport == "anthropic":
        options.update(model="anthropic/none", transport="direct")
    result = RLM(retries=1, retry_backoff=0.01, **options).completion("ctx", "q")
    assert result.status == "error"
    assert "gave up after 2 attempts" in result.error and "\n" not in result.error
    assert time.perf_counter() - started < 30


@pytest.mark.parametrize(
    "reply, expected",
    [
        (repl("FINAL([1, 'two'])"), [1, "two"]),
        (repl("v = {'k': 3}\nFINAL_VAR('v')"), {"k": 3}),
        (repl("answer['content'] = 7\nanswer['ready'] = True"), 7),
        ("Done.\nFINAL(text answer)", "text answer"),
    ],
)
@TRANSPORTS
def test_each_answer_protocol_over_http(reply, expected, transport):
    with ModelServer(_root_then_subs([reply])) as server:
        result = RLM(**_options(transport, server)).completion("ctx", "q")
    assert (result.status, result.answer) == ("done", expected)


def test_direct_transport_classifies_errors_and_never_shows_the_key():
    import asyncio

    from rlm_kernel.core.errors import ModelError, TransientModelError
    from rlm_kernel.core.lm.direct import OpenAICompatibleLM

    key = "sk-planted-secret-0123456789"
    messages = [{"role": "user", "content": "hi"}]
    with (
        ModelServer(lambda m: "ok", fail_rate=1.0, faults=("429",)) as limited,
        ModelServer(lambda m: "ok", latency_ms=2000) as slow,
    ):
        lm = OpenAICompatibleLM(api_base=limited.url, api_key=key)
        with pytest.raises(TransientModelError, match="HTTP 429") as rate:
            asyncio.run(lm.acomplete(messages, model="openai/policy"))
        lm = OpenAICompatibleLM(api_base=limited.url + "/wrong-path", api_key=key)
        with pytest.raises(ModelError, match="HTTP 404") as missing:
            asyncio.run(lm.acomplete(messages, model="openai/policy"))
        assert not isinstance(missing.value, TransientModelError)  # retrying cannot help
        with pytest.raises(TransientModelError, match="Timeout"):
            asyncio.run(OpenAICompatibleLM(api_base=slow.url).acomplete(messages, model="openai/policy", timeout=0.2))
    for error in (rate.value, missing.value):
        assert key not in str(error)


def test_direct_transport_prices_known_models_and_marks_unknown_ones():
    import asyncio

    from rlm_kernel.core.lm.direct import OpenAICompatibleLM

    with ModelServer(lambda m: "ok", model_name="gpt-4o-mini") as server:
        lm = OpenAICompatibleLM(api_base=server.url)
        priced = asyncio.run(lm.acomplete([{"role": "user", "content": "hi"}], model="openai/gpt-4o-mini"))
    assert priced.usage.cost_known and priced.usage.cost_usd > 0
    assert lm.price("openai/no-such-local-model", 10, 10) is None
    with pytest.raises(ValueError, match="needs api_base"):
        RLM(model="my-model", transport="direct")


def test_anthropic_requests_are_built_as_the_messages_api_takes_them():
    from rlm_kernel.core.lm import anthropic

    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q"},
        {"role": "user", "content": [{"type": "text", "text": "more"}]},
        {"role": "assistant", "content": ""},
        {"role": "system", "content": "and exact"},
    ]
    params = {"temperature": 0.2, "stop": "END", "user": "u1", "extra_body": {"top_k": 5}, "extra_headers": {"h": "v"}}
    body = anthropic.body("anthropic/claude-sonnet-4-5", messages, None, params, stream=True)
    assert body["model"] == "claude-sonnet-4-5" and body["system"] == "be brief\n\nand exact"
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "q"}, {"type": "text", "text": "more"}]},
        {"role": "assistant", "content": [{"type": "text", "text": anthropic.EMPTY_TEXT}]},
    ]
    assert body["stop_sequences"] == ["END"] and body["metadata"] == {"user_id": "u1"} and body["top_k"] == 5
    assert body["temperature"] == 0.2 and body["stream"] is True and "extra_headers" not in body
    assert body["max_tokens"] == 64_000  # the model's output limit from the price map: Anthropic requires one
    assert anthropic.body("anthropic/unknown", messages, 77, {}, stream=False)["max_tokens"] == 77
    assert anthropic.url("http://h/") == "http://h/v1/messages" == anthropic.url("http://h/v1/messages")


def test_anthropic_replies_streams_and_their_failures_are_read_as_litellm_reads_them():
    import asyncio
    import json

    from rlm_kernel.core.errors import TransientModelError
    from rlm_kernel.core.lm import anthropic

    usage = {"input_tokens": 10, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 5, "output_tokens": 4}
    reply = {"content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "hi"}], "usage": usage}
    text, chat = anthropic.read_body(json.dumps(reply).encode(), "m")
    assert text == "hi" and chat == {
        "prompt_tokens": 45,
        "completion_tokens": 4,
        "prompt_tokens_details": {"cached_tokens": 30, "cache_creation_tokens": 5},
    }
    with pytest.raises(TransientModelError, match="malformed reply"):
        anthropic.read_body(b'{"content": 3}', "m")

    def events(*payloads):
        async def lines():
            for payload in payloads:  # as aiohttp gives a stream: line by line
                yield f"event: {payload['type']}\n".encode()
                yield f"data: {json.dumps(payload)}\n".encode()
                yield b"\n"

        return lines()

    pieces: list[str] = []
    start = {"type": "message_start", "message": {"usage": {"input_tokens": 12, "output_tokens": 1}}}
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "ab"}}
    done = {"type": "message_delta", "usage": {"output_tokens": 9}}
    text, chat = asyncio.run(anthropic.read_events(events(start, delta, delta, done), pieces.append, "m"))
    assert (text, pieces, chat["prompt_tokens"], chat["completion_tokens"]) == ("abab", ["ab", "ab"], 12, 9)
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(TransientModelError, match="Overloaded"):
        asyncio.run(anthropic.read_events(events(start, delta, overloaded), pieces.append, "m"))
