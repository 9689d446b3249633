"""The local OpenAI-compatible model server, over plain HTTP and through litellm."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import select
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from rlm_kernel.models.policies import ScriptedReplies, count_tokens, messages_tokens, register_policy
from rlm_kernel.models.server import ModelServer, main

REPO_ROOT = Path(__file__).parents[1]
MESSAGES = [
    {"role": "system", "content": "You are a test policy."},
    {"role": "user", "content": "What is the answer to everything?"},
]


def echo_last(messages: list[dict[str, Any]]) -> str:
    """Policy: echo the last message's content."""
    return f"echo: {messages[-1]['content']}"


def failing_policy(messages: list[dict[str, Any]]) -> str:
    raise RuntimeError("policy exploded")


def post(url: str, payload: Any, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """POST JSON (or raw bytes) and return status, headers and body, errors included."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


def chat(
    server: ModelServer, messages: list[dict[str, Any]] = MESSAGES, **kwargs: Any
) -> tuple[int, dict[str, str], bytes]:
    return post(f"{server.url}/chat/completions", {"model": "some-model", "messages": messages}, **kwargs)


def import_litellm() -> Any:
    # Keep litellm from fetching its cost map or tokenizers: these tests run offline.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def test_plain_post_returns_openai_completion() -> None:
    with ModelServer(echo_last) as server:
        status, headers, body = chat(server)
        assert status == 200
        assert headers["Content-Type"] == "application/json"
        completion = json.loads(body)
        assert completion["object"] == "chat.completion"
        assert completion["id"].startswith("chatcmpl-")
        assert isinstance(completion["created"], int)
        assert completion["model"] == "some-model"
        reply = "echo: What is the answer to everything?"
        assert completion["choices"] == [
            {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
        ]
        prompt_tokens = messages_tokens(MESSAGES)
        assert completion["usage"] == {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": count_tokens(reply),
            "total_tokens": prompt_tokens + count_tokens(reply),
        }
        # The route without the /v1 prefix answers too.
        status, _, _ = post(f"http://127.0.0.1:{server.port}/chat/completions", {"messages": MESSAGES})
        assert status == 200
        assert server.stats()["requests"] == server.stats()["served"] == 2


def test_models_and_stats_endpoints() -> None:
    with ModelServer(echo_last, model_name="my-policy") as server:
        assert server.url == f"http://127.0.0.1:{server.port}/v1"
        assert get_json(f"{server.url}/models") == {"object": "list", "data": [{"id": "my-policy", "object": "model"}]}
        for _ in range(3):
            chat(server)
        stats = get_json(f"http://127.0.0.1:{server.port}/stats")
        assert stats == server.stats()
        # A handler leaves the in-flight count just after its reply is sent, so even
        # sequential requests may overlap by that instant: only the counts are exact.
        assert stats == {
            "requests": 3,
            "served": 3,
            "faults": {"429": 0, "500": 0, "timeout": 0, "malformed": 0, "policy_error": 0},
            "max_in_flight": stats["max_in_flight"],
            "keys": {},
            "rejected": {},
            "streamed": 0,
            "models": {"some-model": 3},
            "request_times": stats["request_times"],
            "last_headers": stats["last_headers"],
            "last_body": stats["last_body"],
        }
        assert stats["max_in_flight"] in (1, 2)
        assert len(stats["request_times"]) == 3 and stats["request_times"] == sorted(stats["request_times"])
        assert stats["last_body"]["model"] == "some-model" and "authorization" not in stats["last_headers"]


def test_keep_alive_connection_serves_several_requests() -> None:
    with ModelServer(ScriptedReplies(["one", "two"])) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            replies = []
            for body in (json.dumps({"messages": MESSAGES}), "not json", json.dumps({"messages": MESSAGES})):
                connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                replies.append((response.status, json.loads(response.read())))
        finally:
            connection.close()
    assert [status for status, _ in replies] == [200, 400, 200]
    assert replies[0][1]["choices"][0]["message"]["content"] == "one"
    assert "bad request" in replies[1][1]["error"]["message"]
    assert replies[2][1]["choices"][0]["message"]["content"] == "two"


def test_bad_requests_get_400_and_are_not_served() -> None:
    with ModelServer(echo_last) as server:
        url = f"{server.url}/chat/completions"
        assert post(url, b"{not json")[0] == 400
        assert post(url, {"model": "x"})[0] == 400
        assert post(url, {"messages": "hello"})[0] == 400
        assert post(f"{server.url}/embeddings", {"input": "x"})[0] == 404
        stats = server.stats()
    assert stats["requests"] == 3
    assert stats["served"] == 0
    assert sum(stats["faults"].values()) == 0


def test_policy_exception_is_a_500_with_its_message() -> None:
    with ModelServer(failing_policy) as server:
        status, _, body = chat(server)
        assert status == 500
        assert "policy exploded" in json.loads(body)["error"]["message"]
        assert server.stats()["faults"]["policy_error"] == 1
        assert server.stats()["served"] == 0


@pytest.fixture
def loop_for_litellms_sync_calls() -> Any:
    """litellm's blocking `completion` asks asyncio for the thread's event loop (to log on): without one set, that
    makes a loop nobody closes, collected in some later test as unclosed sockets. The test's own loop, closed."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.mark.usefixtures("loop_for_litellms_sync_calls")
def test_litellm_completion_through_the_server() -> None:
    litellm = import_litellm()
    with ModelServer(echo_last) as server:
        response = litellm.completion(
            model="openai/policy", api_base=server.url, api_key="sk-local", messages=MESSAGES, max_retries=0
        )
        assert server.stats()["served"] == 1
    assert response.choices[0].message.content == "echo: What is the answer to everything?"
    assert response.usage.prompt_tokens == messages_tokens(MESSAGES)
    assert response.usage.completion_tokens == count_tokens("echo: What is the answer to everything?")


def all_at_once(count: int) -> Callable[[list[dict[str, Any]]], str]:
    """Policy: echo, but answer a question only once `count` of them are in flight together (the warm-up passes).

    Requests served one after another never get there: their barrier breaks after 30 s and they fail.
    """
    arrived = threading.Barrier(count, timeout=30)

    def policy(messages: list[dict[str, Any]]) -> str:
        if messages[-1]["content"] != "warm-up":
            arrived.wait()
        return echo_last(messages)

    return policy


def test_concurrent_requests_overlap() -> None:
    with ModelServer(all_at_once(32)) as server:
        prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(32)]
        with ThreadPoolExecutor(max_workers=32) as pool:
            results = list(pool.map(lambda messages: chat(server, messages), prompts))
        stats = server.stats()
    assert [json.loads(body)["choices"][0]["message"]["content"] for _, _, body in results] == [
        f"echo: question {i}" for i in range(32)
    ]
    assert stats["served"] == 32
    assert stats["max_in_flight"] == 32  # the server's own count: all 32 were handled at once


def test_litellm_acompletion_gather_overlaps() -> None:
    litellm = import_litellm()

    async def ask(server: ModelServer, text: str) -> str:
        response = await litellm.acompletion(
            model="openai/policy",
            api_base=server.url,
            api_key="sk-local",
            messages=[{"role": "user", "content": text}],
            max_retries=0,
        )
        return response.choices[0].message.content

    async def run(server: ModelServer) -> list[str]:
        await ask(server, "warm-up")  # the first async call pays one-off client setup
        return list(await asyncio.gather(*(ask(server, f"q{i}") for i in range(32))))

    with ModelServer(all_at_once(32)) as server:
        replies = asyncio.run(run(server))
        stats = server.stats()
    assert replies == [f"echo: q{i}" for i in range(32)]
    assert stats["served"] == 33
    assert stats["max_in_flight"] == 32  # the server's own count: the gathered calls were all in flight at once


@pytest.mark.parametrize("fault, status", [("429", 429), ("500", 500)])
def test_status_faults(fault: str, status: int) -> None:
    with ModelServer(echo_last, fail_rate=1.0, faults=[fault]) as server:
        got, headers, body = chat(server)
        assert got == status
        assert json.loads(body)["error"]["message"]
        if fault == "429":
            assert headers["Retry-After"] == "0"
            assert json.loads(body)["error"]["type"] == "rate_limit_error"
        server.fail_rate = 0.0
        assert chat(server)[0] == 200
        stats = server.stats()
    assert stats["requests"] == 2
    assert stats["served"] == 1
    assert stats["faults"][fault] == 1


def test_malformed_fault_is_an_unparseable_200() -> None:
    with ModelServer(echo_last, fail_rate=1.0, faults=["malformed"]) as server:
        status, _, body = chat(server)
        assert status == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(body)
        server.fail_rate = 0.0
        assert json.loads(chat(server)[2])["choices"][0]["message"]["content"].startswith("echo:")
        stats = server.stats()
    assert stats["served"] == 1
    assert stats["faults"]["malformed"] == 1


def test_timeout_fault_makes_the_client_time_out() -> None:
    with ModelServer(echo_last, fail_rate=1.0, faults=["timeout"], timeout_fault_seconds=2) as server:
        with pytest.raises(TimeoutError):
            chat(server, timeout=0.3)
        server.fail_rate = 0.0
        assert chat(server)[0] == 200
        stats = server.stats()
    assert stats["faults"]["timeout"] == 1
    assert stats["served"] == 1


@pytest.mark.usefixtures("loop_for_litellms_sync_calls")
def test_litellm_maps_faults_to_its_exceptions() -> None:
    litellm = import_litellm()
    expected = {
        "429": litellm.RateLimitError,
        "500": litellm.InternalServerError,
        # openai's SDK fails to parse the 200 body and litellm reports it as a 500.
        "malformed": litellm.InternalServerError,
        "timeout": litellm.Timeout,
    }
    for fault, error in expected.items():
        with ModelServer(echo_last, fail_rate=1.0, faults=[fault], timeout_fault_seconds=2) as server:
            with pytest.raises(error):
                litellm.completion(
                    model="openai/policy",
                    api_base=server.url,
                    api_key="sk-local",
                    messages=MESSAGES,
                    max_retries=0,
                    timeout=0.3,
                )
            assert server.stats()["requests"] == 1, f"{fault}: max_retries=0 should send exactly one request"
            assert server.stats()["faults"][fault] == 1


def test_faults_are_reproducible_and_do_not_consume_scripted_replies() -> None:
    script = [f"reply {i}" for i in range(20)]

    def run() -> tuple[list[int], list[str], dict[str, Any]]:
        statuses, replies = [], []
        with ModelServer(ScriptedReplies(script), fail_rate=0.5, faults=["429", "500"], seed=7) as server:
            while len(replies) < len(script):
                status, _, body = chat(server)
                statuses.append(status)
                if status == 200:
                    replies.append(json.loads(body)["choices"][0]["message"]["content"])
            return statuses, replies, server.stats()

    statuses, replies, stats = run()
    assert replies == script
    assert {429, 500} <= set(statuses)
    assert stats["requests"] == len(statuses)
    assert stats["served"] + stats["faults"]["429"] + stats["faults"]["500"] == stats["requests"]
    assert run()[0] == statuses


def test_constructor_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        ModelServer(echo_last, faults=["503"])
    with pytest.raises(ValueError, match="fail_rate"):
        ModelServer(echo_last, fail_rate=1.5)


def test_stop_is_idempotent_and_frees_the_port() -> None:
    server = ModelServer(echo_last).start()
    port = server.port
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        post(f"http://127.0.0.1:{port}/v1/chat/completions", {"messages": MESSAGES}, timeout=1)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--policy", "no-such-policy"], "no-such-policy"),
        (["--policy", "no_such_module:policy"], "no_such_module"),
        (["--policy", "server-test-echo", "--faults", "429,503"], "503"),
        (["--policy", "server-test-echo", "--fail-rate", "2"], "fail_rate"),
        (["--policy", "server-test-echo", "--port", "eighty"], "eighty"),
    ],
)
def test_main_rejects_bad_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    register_policy(echo_last, "server-test-echo")
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("rlm serve-model: error:")
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(stop_signal: signal.Signals) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "rlm_kernel.models.server", "--port", "0", "--policy", "tests.test_server:echo_last"],
        cwd=REPO_ROOT,
        # Without PYTHONUNBUFFERED the serving line arrives only if the server flushes it.
        env={name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 20)
        assert ready, "the server printed nothing within 20 s"
        line = process.stdout.readline()
        assert line.startswith("serving policy tests.test_server:echo_last on http://127.0.0.1:"), line
        url = line.split()[-1]
        assert not url.endswith(":0/v1")
        status, _, body = post(f"{url}/chat/completions", {"messages": MESSAGES})
        assert status == 200
        assert json.loads(body)["choices"][0]["message"]["content"] == "echo: What is the answer to everything?"
        process.send_signal(stop_signal)
        assert process.wait(timeout=10) == 0
        assert process.stderr.read() == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
