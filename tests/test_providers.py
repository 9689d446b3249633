"""First contact with real providers, both transports, against `rlm serve-model` playing each of them:
keys, usage-less servers, prices, refusals, dead servers, slow replies, model prefixes, streaming."""

from __future__ import annotations

import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.errors import UnpricedModelWarning
from rlm_kernel.core.lm import import_litellm
from rlm_kernel.models.policies import ScriptedReplies
from rlm_kernel.models.server import ModelServer
from tests.conftest import repl, run

TRANSPORTS = pytest.mark.parametrize("transport", ["litellm", "direct"])
KEY = "sk-test-server-key-7f3a9c"
WRONG_KEY = "sk-wrong-key-quoted-back-51d2"


def root_then_subs(root_replies):
    root = ScriptedReplies(root_replies)

    def policy(messages):
        if messages[0]["role"] == "system":
            return root(messages)
        return "sub:" + messages[-1]["content"][:20]

    return policy


def one_sub_call():
    return root_then_subs([repl("x = llm_query('hello')\nprint(x)"), repl("FINAL(x)")])


@pytest.fixture(autouse=True)
def no_keys_in_the_environment(monkeypatch):
    for name in ("OPENAI_API_KEY", "HOSTED_VLLM_API_KEY", "RLM_API_KEY", "RLM_SUB_API_KEY"):
        monkeypatch.delenv(name, raising=False)


# -- keys ----------------------------------------------------------------------------------


@TRANSPORTS
def test_the_providers_variable_reaches_a_keyed_server(transport, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with ModelServer(one_sub_call(), api_key=KEY) as server:
        result = RLM(model="openai/policy", api_base=server.url, transport=transport).completion("ctx", "q")
        stats = server.stats()
    assert (result.status, result.answer) == ("done", "sub:hello")
    assert stats["keys"] == {KEY: 3} and stats["rejected"] == {}


@TRANSPORTS
def test_a_missing_key_fails_at_once_and_says_what_to_set(transport):
    with ModelServer(one_sub_call(), api_key=KEY) as server:
        result = RLM(model="openai/policy", api_base=server.url, transport=transport, retries=3).completion("c", "q")
        stats = server.stats()
    assert result.status == "error"
    assert stats["requests"] == 1  # an auth error is never retried
    assert "refused the credentials (HTTP 401)" in result.error and server.url in result.error
    assert "OPENAI_API_KEY" in result.error and "--api-key" in result.error and "RLM_API_KEY" in result.error


@TRANSPORTS
def test_a_wrong_key_quoted_by_the_server_is_redacted_everywhere(transport, tmp_path):
    trace = tmp_path / "t.jsonl"
    with ModelServer(one_sub_call(), api_key=KEY) as server:
        rlm = RLM(
            model="openai/policy", api_base=server.url, api_key=WRONG_KEY, transport=transport, trace_path=str(trace)
        )
        result = rlm.completion("c", "q")
    assert result.status == "error" and "Incorrect API key provided: [redacted]" in result.error
    assert WRONG_KEY not in result.error and WRONG_KEY not in trace.read_text()
    assert all(WRONG_KEY not in str(e.data) for e in result.trace.events)


@TRANSPORTS
def test_a_403_is_not_retried_and_names_the_sub_models_key(transport):
    with ModelServer(one_sub_call(), api_key=KEY) as root, ModelServer(lambda m: "x", reject_status=403) as subs:
        result = RLM(
            model="openai/policy",
            api_base=root.url,
            api_key=KEY,
            sub_api_base=subs.url,
            sub_api_key="sk-sub-key-not-allowed",
            transport=transport,
        ).completion("c", "q")
        sub_stats = subs.stats()
    assert result.status == "done"  # the failed sub-call's slot holds its error; the root goes on
    assert sub_stats["requests"] == 1 and sub_stats["rejected"] == {403: 1}
    sub = result.trace.root.subcalls[0]
    assert "(HTTP 403)" in sub.error and "--sub-api-key" in sub.error and "RLM_SUB_API_KEY" in sub.error


@TRANSPORTS
def test_root_and_sub_model_on_two_keyed_servers(transport):
    with (
        ModelServer(one_sub_call(), api_key=KEY) as root,
        ModelServer(lambda m: "from the sub server", api_key="sk-other-sub-key") as subs,
    ):
        result = RLM(
            model="openai/policy",
            api_base=root.url,
            api_key=KEY,
            sub_api_base=subs.url,
            sub_api_key="sk-other-sub-key",
            transport=transport,
        ).completion("c", "q")
        assert root.stats()["keys"] == {KEY: 2} and subs.stats()["keys"] == {"sk-other-sub-key": 1}
    assert result.answer == "from the sub server"


# -- usage, prices -----------------------------------------------------------------------


@TRANSPORTS
def test_a_server_without_usage_is_counted_here_and_the_token_budget_binds(transport):
    # Every reply asks for more sub-calls: only the budget can stop this run.
    policy = root_then_subs([repl(f"r{i} = llm_query_batched(['{'word ' * 200}'] * 4)") for i in range(30)])
    with ModelServer(policy, omit_usage=True) as server:
        result = RLM(
            model="openai/policy", api_base=server.url, max_tokens=12_000, max_iterations=30, transport=transport
        ).completion("ctx", "q")
        served = server.stats()["served"]
    assert result.status == "budget" and result.limit == "max_tokens"
    assert 0 < result.usage.tokens <= 12_000
    assert result.usage.counted_calls == served  # every call was counted here, and marked so
    assert "counted here for" in result.summary()
    iteration = result.trace.root.iterations[0]
    assert iteration.usage.counted_calls == 1 and iteration.usage.input_tokens > 0


@TRANSPORTS
def test_a_server_without_usage_is_priced_and_the_cost_budget_binds(transport):
    policy = root_then_subs([repl(f"r{i} = llm_query_batched(['{'word ' * 400}'] * 8)") for i in range(30)])
    with ModelServer(policy, omit_usage=True) as server:
        result = RLM(
            model="openai/gpt-4o-mini", api_base=server.url, max_cost_usd=0.001, max_iterations=30, transport=transport
        ).completion("ctx", "q")
    assert result.status == "budget" and result.limit == "max_cost_usd"
    assert result.usage.cost_known and 0 < result.usage.cost_usd <= 0.001


@TRANSPORTS
def test_an_unpriced_model_under_a_cost_budget_warns_and_prices_make_it_bind(transport):
    policy = root_then_subs([repl(f"r{i} = llm_query_batched(['{'word ' * 400}'] * 8)") for i in range(30)])
    with ModelServer(policy) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, max_cost_usd=0.01, max_iterations=3, transport=transport)
        assert len(rlm.pricing_warnings()) == 1 and "prices=" in rlm.pricing_warnings()[0]
        with pytest.warns(UnpricedModelWarning, match="cannot bind: litellm has no price for openai/policy"):
            unbound = rlm.completion("ctx", "q")
        priced = RLM(
            model="openai/policy",
            api_base=server.url,
            max_cost_usd=0.01,
            max_iterations=30,
            prices={"openai/policy": {"input": 0.5, "output": 1.0}},
            transport=transport,
        )
        assert priced.pricing_warnings() == []
        bound = priced.completion("ctx", "q")
    assert unbound.status == "max_iterations" and not unbound.usage.cost_known
    assert bound.status == "budget" and bound.usage.cost_known
    # The scripted server ignores max_tokens, so the last reply may pass its cap by its own size (~$0.0005).
    assert 0.005 < bound.usage.cost_usd <= 0.0105


def test_bad_prices_are_one_clear_line():
    with pytest.raises(ValueError, match=r"prices\['m'\] must be"):
        RLM(model="openai/m", prices={"m": 0.5})


# -- failures ----------------------------------------------------------------------------


@TRANSPORTS
def test_a_context_length_error_says_so_names_the_model_and_is_not_retried(transport):
    policy = root_then_subs([repl("print(llm_query('word ' * 500))"), repl("FINAL('done')")])
    with ModelServer(policy) as root, ModelServer(lambda m: "x", context_window=100) as subs:
        result = RLM(
            model="openai/policy",
            sub_model="openai/small",
            api_base=root.url,
            sub_api_base=subs.url,
            transport=transport,
        ).completion("c", "q")
        assert subs.stats()["requests"] == 1
    error = result.trace.root.subcalls[0].error
    assert "does not fit openai/small's context window" in error and "maximum context length is 100" in error


@TRANSPORTS
def test_a_refused_connection_names_the_url(transport):
    result = RLM(model="openai/none", api_base="http://127.0.0.1:9/v1", retries=0, transport=transport).completion(
        "c", "q"
    )
    assert result.status == "error" and "http://127.0.0.1:9/v1" in result.error


@TRANSPORTS
def test_a_trickling_reply_meets_the_call_deadline_and_max_seconds_bounds_the_run(transport):
    import_litellm()  # its first import takes seconds: not what this test measures
    with ModelServer(lambda m: repl("FINAL(1)"), trickle_seconds=0.05) as server:  # ~15 s for a whole reply
        started = time.perf_counter()
        result = RLM(
            model="openai/policy",
            api_base=server.url,
            call_timeout=1,
            max_seconds=4,
            retries=10,
            retry_backoff=0.01,
            transport=transport,
        ).completion("c", "q")
        elapsed = time.perf_counter() - started
        attempts = server.stats()["requests"]
    # Stopped by the last attempt's deadline (error) or by the time budget before another one (budget).
    assert result.status in ("error", "budget") and "max_seconds" in (result.limit or "max_seconds")
    assert attempts >= 3, "each attempt must end at its 1 s deadline, not when the reply is whole"
    assert elapsed < 6, f"the run took {elapsed:.1f} s under max_seconds=4"


@TRANSPORTS
def test_every_openai_compatible_prefix_is_sent_as_the_servers_name(transport):
    with ModelServer(lambda m: repl("FINAL(1)") if m[0]["role"] == "system" else "x") as server:
        for model in ("hosted_vllm/tiny", "openai/tiny", "lm_studio/tiny"):
            RLM(model=model, api_base=server.url, transport=transport).completion("c", "q")
        assert server.stats()["models"] == {"tiny": 3}


# -- streaming ---------------------------------------------------------------------------


@TRANSPORTS
@pytest.mark.parametrize("server_streams", [True, False])
def test_streamed_replies_arrive_as_model_text_and_usage_stays_exact(transport, server_streams):
    reply = repl("x = 1\nFINAL(x)", prose="A plan written at some length. " * 20)
    events = []
    with ModelServer(lambda m: reply, streams=server_streams) as server:
        plain = RLM(model="openai/policy", api_base=server.url, transport=transport).completion("c", "q")
        streamed = RLM(
            model="openai/policy", api_base=server.url, transport=transport, stream=True, on_event=events.append
        ).completion("c", "q")
        assert server.stats()["streamed"] == (1 if server_streams else 0)
    texts = [e.data["text"] for e in events if e.kind == "model_text"]
    assert "".join(texts) == reply == streamed.trace.root.iterations[0].reply
    assert streamed.answer == 1
    assert (streamed.usage.input_tokens, streamed.usage.output_tokens) == (
        plain.usage.input_tokens,
        plain.usage.output_tokens,
    )
    assert streamed.usage.counted_calls == 0


@TRANSPORTS
def test_a_reply_the_server_writes_slowly_reaches_model_text_before_the_call_ends(transport):
    """A policy that yields its reply in pieces and pauses: the first piece is seen while the model still writes."""
    first, rest = "Reading the log first. ", repl("FINAL('done')")
    seen_first, finish = threading.Event(), threading.Event()

    def slow_writer(messages):
        yield first
        assert finish.wait(30)  # opened once the client has shown the first piece
        yield rest

    def on_event(event):
        if event.kind == "model_text" and event.data["text"].startswith(first.strip()):
            seen_first.set()

    with ModelServer(slow_writer) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, transport=transport, stream=True, on_event=on_event)
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(rlm.completion, "c", "q")
            assert seen_first.wait(30) and not running.done()
            finish.set()
            result = running.result(30)
        plain = RLM(model="openai/policy", api_base=server.url, transport=transport).completion("c", "q")
    assert result.answer == plain.answer == "done"
    assert result.trace.root.iterations[0].reply == first + rest
    assert result.usage.output_tokens == plain.usage.output_tokens  # counted on the whole reply, streamed or not


def test_model_text_events_are_throttled_per_node():
    from rlm_kernel.core.calls import MODEL_TEXT_INTERVAL, TextStream

    emitted = []

    def emit(kind, **data):
        emitted.append((time.monotonic(), data["text"]))

    stream = TextStream(emit, iteration=0)
    started = time.monotonic()
    while time.monotonic() - started < 0.5:
        stream.add("x")
        time.sleep(0.001)
    stream.flush()
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(emitted[:-1])]  # the last is the final flush
    assert len(emitted) <= 0.5 / MODEL_TEXT_INTERVAL + 2
    assert all(gap >= MODEL_TEXT_INTERVAL * 0.9 for gap in gaps)
    assert sum(len(text) for _, text in emitted) > 100  # nothing lost between events


# -- the CLI and the magics through a keyed server -------------------------------------------


@TRANSPORTS
def test_rlm_run_reaches_a_keyed_server_with_api_key_and_redacts_a_wrong_one(tmp_path, capsys, monkeypatch, transport):
    from rlm_kernel.cli import main

    doc = tmp_path / "doc.txt"
    doc.write_text("some text\n")
    with ModelServer(one_sub_call(), api_key=KEY) as server:
        base = ["run", "--context", str(doc), "--model", "openai/policy", "--api-base", server.url]
        base += ["--transport", transport]
        assert main([*base, "--api-key", KEY]) == 0
        assert "sub:hello" in capsys.readouterr().out
        monkeypatch.setenv("RLM_API_KEY", WRONG_KEY)
        assert main(base) == 1
        err = capsys.readouterr().err
        assert server.stats()["keys"] == {KEY: 3, WRONG_KEY: 1}
    assert err.count("\n") == 1 and "Incorrect API key provided: [redacted]" in err and WRONG_KEY not in err


@TRANSPORTS
def test_the_magics_reach_a_keyed_server_with_their_api_key_setting(ip, transport):
    from IPython.core.error import UsageError

    shell = ip
    shell.user_ns["doc"] = "some text"
    with ModelServer(one_sub_call(), api_key=KEY) as server:
        cell = f"%%rlm --context doc --model openai/policy --api-base {server.url} --transport {transport}\nq"
        run(shell, f"%config RLMMagics.api_key = '{KEY}'")
        assert run(shell, cell) == "sub:hello"
        run(shell, f"%config RLMMagics.api_key = '{WRONG_KEY}'")
        with pytest.raises(UsageError) as failed:
            run(shell, cell)
        assert server.stats()["keys"] == {KEY: 3, WRONG_KEY: 1}
    assert "Incorrect API key provided: [redacted]" in str(failed.value) and WRONG_KEY not in str(failed.value)


# -- cloud models without an api_base (the OpenAI path through OPENAI_BASE_URL) ---------------------------


@pytest.fixture
def openai_environment(monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_ORG_ID", "OPENAI_PROJECT", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_ORGANIZATION", "org-rlm-test")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_rlm_test")
    return monkeypatch


@pytest.mark.parametrize("transport, taken", [("auto", "direct"), ("litellm", "litellm")])
@pytest.mark.parametrize("variable", ["OPENAI_BASE_URL", "OPENAI_API_BASE"])
def test_an_openai_model_without_api_base_goes_direct_to_the_openai_base_url(
    transport, taken, variable, openai_environment, tmp_path
):
    trace = tmp_path / "t.jsonl"
    with ModelServer(one_sub_call(), api_key=KEY) as server:
        openai_environment.setenv(variable, server.url)
        rlm = RLM(model="openai/policy", transport=transport, trace_path=str(trace))
        result = rlm.completion("ctx", "q")
        stats = server.stats()
    assert (result.status, result.answer) == ("done", "sub:hello")
    assert rlm.transports == {"model": taken, "sub_model": taken}
    assert f'"transports": {{"model": "{taken}", "sub_model": "{taken}"}}' in trace.read_text()
    assert stats["keys"] == {KEY: 3} and stats["models"] == {"policy": 3}
    assert stats["last_headers"]["openai-organization"] == "org-rlm-test"
    assert stats["last_headers"]["openai-project"] == "proj_rlm_test"


def test_a_plain_openai_name_and_the_openai_compatible_providers_go_direct_without_api_base():
    assert RLM(model="gpt-4o-mini").transports["model"] == "direct"
    assert RLM(model="groq/llama-3.1-8b-instant").transports["model"] == "direct"
    assert RLM(model="anthropic/claude-sonnet-4-5").transports["model"] == "direct"  # Anthropic's own format
    for model in ("claude-sonnet-4-5", "gemini/gemini-2.0-flash", "azure/dep1"):
        assert RLM(model=model).transports["model"] == "litellm", model
    assert RLM(model="bedrock/anthropic.claude-3-5-sonnet", api_base="http://x").transports["model"] == "litellm"


def test_a_provider_endpoint_and_key_come_from_its_variables(monkeypatch):
    with ModelServer(one_sub_call(), api_key=KEY) as server:
        monkeypatch.setenv("GROQ_API_BASE", server.url)
        monkeypatch.setenv("GROQ_API_KEY", KEY)
        result = RLM(model="groq/llama-3.1-8b-instant").completion("ctx", "q")
        stats = server.stats()
    assert (result.status, result.answer) == ("done", "sub:hello")
    assert stats["keys"] == {KEY: 3} and stats["models"] == {"llama-3.1-8b-instant": 3}


def test_no_openai_key_fails_before_any_request_and_says_what_to_set(openai_environment):
    openai_environment.delenv("OPENAI_API_KEY")
    with ModelServer(one_sub_call()) as server:
        openai_environment.setenv("OPENAI_BASE_URL", server.url)
        result = RLM(model="openai/policy", retries=3).completion("ctx", "q")
        stats = server.stats()
    assert result.status == "error" and stats["requests"] == 0
    assert "no API key" in result.error and "OPENAI_API_KEY" in result.error


# -- one price on every path: cached input and reasoning tokens -------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
@TRANSPORTS
def test_cached_and_reasoning_tokens_cost_the_same_on_every_path_as_litellm_prices_them(transport, stream):
    litellm = import_litellm()
    with ModelServer(one_sub_call(), cached_fraction=0.9, reasoning_tokens=40) as server:
        rlm = RLM(model="openai/gpt-4o-mini", api_base=server.url, transport=transport, stream=stream)
        result = rlm.completion("ctx", "q")
        assert server.stats()["streamed"] == (2 if stream else 0)  # the root's replies; sub-calls do not stream
    root = result.trace.root
    calls = [i.usage for i in root.iterations] + [sub.usage for sub in root.subcalls]
    assert len(calls) == 3
    expected = 0.0
    for call in calls:
        usage = litellm.Usage(
            prompt_tokens=call.input_tokens,
            completion_tokens=call.output_tokens,
            total_tokens=call.input_tokens + call.output_tokens,
            prompt_tokens_details={"cached_tokens": int(call.input_tokens * 0.9)},
            completion_tokens_details={"reasoning_tokens": 40},
        )
        expected += sum(litellm.cost_per_token(model="openai/gpt-4o-mini", usage_object=usage))
    list_price = sum(
        sum(
            litellm.cost_per_token(
                model="openai/gpt-4o-mini", prompt_tokens=c.input_tokens, completion_tokens=c.output_tokens
            )
        )
        for c in calls
    )
    assert result.usage.cost_usd == pytest.approx(expected, rel=1e-9) and expected < 0.7 * list_price


def test_a_cost_budget_allows_as_many_cached_calls_on_both_transports():
    def requests_within_budget(transport, cached_fraction):
        replies = [repl("x = llm_query('hello')\nprint(x)")] * 80
        with ModelServer(root_then_subs(replies), cached_fraction=cached_fraction) as server:
            rlm = RLM(
                model="openai/gpt-4o-mini",
                api_base=server.url,
                transport=transport,
                max_cost_usd=0.004,
                max_output_tokens=64,
                max_iterations=80,
            )
            result = rlm.completion("ctx " * 300, "q")
            assert result.status == "budget" and result.usage.cost_usd <= 0.004
            return server.stats()["requests"]

    at_list_price = requests_within_budget("direct", 0.0)
    cached = {transport: requests_within_budget(transport, 0.9) for transport in ("direct", "litellm")}
    assert cached["direct"] == cached["litellm"] > 1.3 * at_list_price, (cached, at_list_price)


# -- Anthropic's Messages API: posted directly by default, through litellm on request --------------------


@pytest.fixture
def anthropic_environment(monkeypatch):
    for name in ("ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    return monkeypatch


@pytest.mark.parametrize("stream", [False, True])
def test_an_anthropic_model_is_posted_in_anthropics_format_with_litellms_usage_and_price(stream, anthropic_environment):
    runs = {}
    for transport in ("auto", "litellm"):
        with ModelServer(one_sub_call(), api_key=KEY, cached_fraction=0.5) as server:
            api_base = server.url.removesuffix("/v1")
            rlm = RLM(model="anthropic/claude-sonnet-4-5", api_base=api_base, stream=stream, transport=transport)
            runs[transport] = (rlm.transports, rlm.completion("ctx", "q"), server.stats())
    (direct_transports, direct, stats), (_, through_litellm, _) = runs["auto"], runs["litellm"]
    assert direct_transports == {"model": "direct", "sub_model": "direct"}
    assert (direct.status, direct.answer) == (through_litellm.status, through_litellm.answer) == ("done", "sub:hello")
    assert stats["keys"] == {KEY: 3} and stats["models"] == {"claude-sonnet-4-5": 3} and stats["rejected"] == {}
    assert (stats["streamed"] > 0) == stream  # the root's calls stream when asked
    body, headers = stats["last_body"], stats["last_headers"]
    assert headers["anthropic-version"] == "2023-06-01" and "authorization" not in headers
    assert body["max_tokens"] > 0 and body["system"] and body["messages"][0]["role"] == "user"
    # The same tokens and the same price on both paths, cached input (half of each prompt here) included.
    for name in ("llm_calls", "input_tokens", "output_tokens", "counted_calls"):
        assert getattr(direct.usage, name) == getattr(through_litellm.usage, name), name
    assert direct.usage.cost_known and direct.usage.cost_usd == pytest.approx(through_litellm.usage.cost_usd)
    assert direct.usage.counted_calls == 0


def test_an_anthropic_run_with_parameters_only_litellm_translates_goes_through_litellm():
    from rlm_kernel.core.errors import ConfigError

    assert RLM(model="anthropic/claude-sonnet-4-5", temperature=0.1, top_p=0.9).transports["model"] == "direct"
    assert RLM(model="anthropic/claude-sonnet-4-5", seed=3).transports == {"model": "litellm", "sub_model": "litellm"}
    with_tools = RLM(model="anthropic/claude-sonnet-4-5", sub_model_params={"response_format": {"type": "json"}})
    assert with_tools.transports == {"model": "direct", "sub_model": "litellm"}
    with pytest.raises(ConfigError, match="seed need litellm's translation: use transport='litellm'"):
        RLM(model="anthropic/claude-sonnet-4-5", seed=3, transport="direct")


@pytest.mark.parametrize("variable", ["ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE"])
def test_an_anthropic_model_without_api_base_goes_to_the_variables_server(variable, anthropic_environment):
    with ModelServer(one_sub_call(), api_key=KEY) as server:
        anthropic_environment.setenv(variable, server.url.removesuffix("/v1"))
        rlm = RLM(model="anthropic/claude-sonnet-4-5")
        result = rlm.completion("ctx", "q")
        stats = server.stats()
    assert rlm.transports["model"] == "direct"
    assert (result.status, result.answer) == ("done", "sub:hello")
    assert stats["keys"] == {KEY: 3}


def test_no_anthropic_key_fails_before_any_request_and_a_wrong_one_is_redacted(anthropic_environment, tmp_path):
    anthropic_environment.delenv("ANTHROPIC_API_KEY")
    with ModelServer(one_sub_call(), api_key=KEY) as server:
        anthropic_environment.setenv("ANTHROPIC_BASE_URL", server.url.removesuffix("/v1"))
        missing = RLM(model="anthropic/claude-sonnet-4-5", retries=3).completion("ctx", "q")
        assert server.stats()["requests"] == 0
        trace = tmp_path / "t.jsonl"
        wrong = RLM(model="anthropic/claude-sonnet-4-5", api_key=WRONG_KEY, trace_path=str(trace)).completion("c", "q")
        stats = server.stats()
    assert missing.status == "error" and "no API key" in missing.error and "ANTHROPIC_API_KEY" in missing.error
    assert stats["requests"] == 1 and stats["rejected"] == {401: 1}  # an auth error is never retried
    assert wrong.status == "error" and "Incorrect API key provided: [redacted]" in wrong.error
    assert WRONG_KEY not in wrong.error and WRONG_KEY not in trace.read_text()
