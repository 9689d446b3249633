"""litellm's price map read without litellm: the same prices and windows as litellm, the same provider lists,
and a whole OpenAI-compatible run that never imports litellm (nor any Jupyter package)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.lm import import_litellm, price_map
from rlm_kernel.core.lm.direct import OpenAICompatibleLM, picks_direct
from rlm_kernel.models.server import ModelServer
from tests.conftest import repl

ROOT = Path(__file__).resolve().parents[1]
# Subscription providers whose lookups try to log in over the network: not priced from a map anyway.
LOGIN_PROVIDERS = ("github_copilot", "chatgpt")


def test_the_provider_lists_are_litellms():
    litellm = import_litellm()
    assert set(litellm.openai_compatible_providers) == price_map.OPENAI_COMPATIBLE_PROVIDERS
    # The enum, not litellm.provider_list: registering the offline providers appends their names to that list.
    assert {p.value for p in litellm.LlmProviders} == price_map.LITELLM_PROVIDERS


def _openai_compatible_names() -> list[str]:
    """Every chat model of an OpenAI-compatible provider in the map, as named there and with its prefix."""
    compatible = price_map.OPENAI_COMPATIBLE_PROVIDERS | {"openai", "text-completion-openai"}
    names = []
    for name, found in price_map.price_map().items():
        provider = found.get("litellm_provider") if isinstance(found, dict) else None
        if provider not in compatible or provider in LOGIN_PROVIDERS:
            continue
        if found.get("mode", "chat") in ("chat", "completion", "responses"):
            names += [name] if "/" in name else [name, f"{provider}/{name}"]
    return names


def _routed_as_read(litellm, name: str) -> bool:
    """Whether litellm routes `name` to the provider we read it as (some names it cannot route at all)."""
    provider, found = price_map.entry(name)
    try:
        routed = litellm.get_llm_provider(model=name)[1]
    except Exception:  # litellm raises BadRequestError for a name it cannot route
        return provider is None and found is None
    listed = price_map.price_map().get(name) or {}
    return bool(routed == (price_map.provider_prefix(name) or listed.get("litellm_provider") or routed))


def test_prices_equal_litellms_cost_per_token_for_every_openai_compatible_model():
    litellm = import_litellm()
    names = _openai_compatible_names()
    assert len(names) > 1000
    compared = priced = 0
    for name in names:
        if not _routed_as_read(litellm, name):
            continue
        found = price_map.entry(name)[1]
        thresholds = [t for t, _ in price_map._thresholds(found)] if found else []
        counts = [(3000, 500)] + [(int(t) + delta, 700) for t in thresholds for delta in (0, 1)]
        for input_tokens, output_tokens in counts:
            try:
                expected = sum(
                    litellm.cost_per_token(model=name, prompt_tokens=input_tokens, completion_tokens=output_tokens)
                )
            except Exception:  # litellm raises for a model it cannot price
                expected = None
            ours = OpenAICompatibleLM(api_base="http://127.0.0.1:9/v1").price(name, input_tokens, output_tokens)
            assert (ours is None) == (expected is None), name
            if expected is not None:
                assert ours == pytest.approx(expected, abs=1e-12, rel=0), (name, input_tokens)
                priced += 1
            if not price_map.needs_litellm(name):
                compared += 1
    assert compared > 1500 and priced > 1000  # the map, not litellm, priced nearly all of them


def test_cached_input_cache_writes_and_reasoning_are_priced_as_litellm_prices_them():
    """The one pricing function of both transports, over the map: cached input at the cache-read rate, cache
    writes at the cache-creation rate, reasoning at the reasoning rate, as `litellm.cost_per_token` bills a
    usage that reports them; a quarter of the models sampled, every one with a cache or reasoning rate."""
    litellm = import_litellm()
    lm = OpenAICompatibleLM(api_base="http://127.0.0.1:9/v1")
    keys = ("cache_read_input_token_cost", "cache_creation_input_token_cost", "output_cost_per_reasoning_token")
    compared = with_rates = 0
    for index, name in enumerate(_openai_compatible_names()):
        found = price_map.entry(name)[1]
        special = bool(found) and any(found.get(key) is not None for key in keys)
        if not (special or index % 4 == 0) or price_map.needs_litellm(name) or not _routed_as_read(litellm, name):
            continue
        for detail in (price_map.TokenDetail(6000, 0, 0), price_map.TokenDetail(2000, 1500, 400)):
            usage = litellm.Usage(
                prompt_tokens=10_000,
                completion_tokens=2000,
                total_tokens=12_000,  # as servers report it: reasoning is part of the completion tokens
                prompt_tokens_details={
                    "cached_tokens": detail.cached_input,
                    "cache_creation_tokens": detail.cache_write,
                },
                completion_tokens_details={"reasoning_tokens": detail.reasoning},
            )
            try:
                expected = sum(litellm.cost_per_token(model=name, usage_object=usage))
            except Exception:  # litellm raises for a model it cannot price
                expected = None
            ours = lm.price(name, 10_000, 2000, detail)
            assert (ours is None) == (expected is None), name
            if expected is not None:
                assert ours == pytest.approx(expected, abs=1e-12, rel=1e-9), (name, detail)
                compared += 1
                with_rates += special
    assert compared > 300 and with_rates > 100


def test_anthropic_models_are_priced_as_litellm_prices_a_reply_of_the_messages_api():
    """Every Anthropic chat model, named `anthropic/...`: list price, cache reads and writes as Anthropic reports
    them (litellm's Usage of a Messages API reply), and each side of the long-prompt threshold."""
    litellm = import_litellm()
    lm = OpenAICompatibleLM()
    compared = 0
    for name, found in price_map.price_map().items():
        if not isinstance(found, dict) or found.get("litellm_provider") != "anthropic" or found.get("mode") != "chat":
            continue
        model = name if name.startswith("anthropic/") else f"anthropic/{name}"
        for input_tokens, read, write in ((3000, 0, 0), (10_000, 6000, 0), (10_000, 2000, 1500), (250_000, 1e5, 2e4)):
            read, write = int(read), int(write)
            usage = litellm.Usage(
                prompt_tokens=input_tokens,
                completion_tokens=700,
                total_tokens=input_tokens + 700,
                prompt_tokens_details={"cached_tokens": read, "cache_creation_tokens": write},
                cache_creation_input_tokens=write,
                cache_read_input_tokens=read,
            )
            expected = sum(litellm.cost_per_token(model=model, usage_object=usage))
            ours = lm.price(model, input_tokens, 700, price_map.TokenDetail(read, write, 0))
            assert ours == pytest.approx(expected, abs=1e-12, rel=1e-9), (model, input_tokens, read, write)
            compared += 1
    assert compared >= 40


def test_the_shipped_map_read_entry_by_entry_is_the_files_json_and_holds_a_fifth_of_its_memory():
    path = Path(next(iter(importlib.util.find_spec("litellm").submodule_search_locations))) / price_map.PRICE_MAP_FILE
    whole = json.loads(path.read_text(encoding="utf-8"))
    whole.pop("sample_spec")
    tracemalloc.start()
    try:
        shipped = price_map.ShippedMap(path)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert list(shipped) == list(whole) and len(shipped) == len(whole) > 2000
    assert all(shipped[name] == found for name, found in whole.items())
    assert "sample_spec" not in shipped and shipped.get("no-such-model") is None
    assert held < 1_500_000  # the names and where each entry lies; decoded whole, the map is about 4.6 MB


@pytest.mark.parametrize(
    "text",
    [
        '{"a": {"x": 1},\n"b":{"y": [1, {"z": "}"}]}, "a": {"x": 2}, "q\\"\\u00e9": {}, "n": null}',
        '{"caf\u00e9": {"x": 1}}',  # not ASCII: decoded whole
        "{}",
    ],
)
def test_any_json_object_is_read_as_json_loads_reads_it(tmp_path, text):
    path = tmp_path / "map.json"
    path.write_text(text, encoding="utf-8")
    shipped = price_map.ShippedMap(path)
    assert dict(shipped) == json.loads(text) and list(shipped) == list(json.loads(text))


@pytest.mark.parametrize("text", ["[1, 2]", '{"a": 1', '{"a" 1}', '{"a": 1 "b": 2}', ""])
def test_a_file_that_is_not_one_json_object_is_refused(tmp_path, text):
    path = tmp_path / "map.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises((ValueError, IndexError)):
        price_map.ShippedMap(path)


def test_the_direct_endpoints_are_litellms(monkeypatch):
    """Each provider endpoint the direct path posts to without an api_base: litellm's base URL and key variable."""
    from rlm_kernel.core.lm import endpoints

    litellm = import_litellm()
    providers = {**endpoints.PROVIDER_ENDPOINTS, **endpoints.json_providers()}
    assert len(endpoints.json_providers()) > 10
    for provider, (base, base_variable, key_variables) in providers.items():
        for variable in (base_variable, *key_variables):
            if variable:
                monkeypatch.delenv(variable, raising=False)
        monkeypatch.setenv(key_variables[0], "sk-endpoint-test")
        _, routed, key, api_base = litellm.get_llm_provider(model=f"{provider}/some-model")
        assert (routed, key, api_base.rstrip("/")) == (provider, "sk-endpoint-test", base.rstrip("/")), provider
        found = endpoints.cloud_endpoint(f"{provider}/some-model")
        assert found is not None and found.base_url == base and found.key(None) == "sk-endpoint-test"
        if base_variable:
            monkeypatch.setenv(base_variable, "http://127.0.0.1:9/v1")
            assert litellm.get_llm_provider(model=f"{provider}/some-model")[3] == "http://127.0.0.1:9/v1"
            assert endpoints.cloud_endpoint(f"{provider}/some-model").base_url == "http://127.0.0.1:9/v1"


def test_input_windows_equal_litellms_model_info():
    litellm = import_litellm()
    for name in _openai_compatible_names():
        if not _routed_as_read(litellm, name):
            continue
        try:
            info = litellm.get_model_info(name)
            expected = info.get("max_input_tokens") or info.get("max_tokens")
        except Exception:  # unmapped
            expected = None
        assert price_map.input_window(name) == (expected if expected and expected > 0 else None), name


@pytest.mark.parametrize(
    "model, api_base, router, direct",
    [
        ("openai/policy", "http://h/v1", None, True),
        ("hosted_vllm/tiny", "http://h/v1", None, True),
        ("Qwen/Qwen2.5-7B", "http://h/v1", None, True),  # a repo name, no provider: the server's name
        ("my-model", "http://h/v1", None, True),
        ("anthropic/claude-3-5-sonnet", "http://h/v1", None, True),  # posted in Anthropic's own format
        ("ollama/llama3", "http://h/v1", None, False),
        ("openai/gpt-4o-mini", None, None, True),  # OpenAI's own API (or OPENAI_BASE_URL)
        ("gpt-4o-mini", None, None, True),
        ("groq/llama-3.1-8b-instant", None, None, True),  # an OpenAI-compatible provider's endpoint
        ("anthropic/claude-3-5-sonnet", None, None, True),  # Anthropic's API (or ANTHROPIC_BASE_URL)
        ("anthropic/claude-3-5-sonnet", "http://h/v1", [{"model_name": "m"}], False),
        ("claude-sonnet-4-5", None, None, False),
        ("gemini/gemini-2.0-flash", None, None, False),
        ("azure/dep1", None, None, False),
        ("my-model", None, None, False),  # no api_base and no provider: litellm says what is missing
        ("openai/policy", "http://h/v1", [{"model_name": "m"}], False),
        ("scripted/demo", "http://h/v1", None, False),
    ],
)
def test_auto_picks_direct_only_for_openai_compatible_and_anthropic_servers(model, api_base, router, direct):
    assert picks_direct(model, api_base, router) is direct


def test_each_model_gets_its_own_transport_and_the_trace_records_it():
    policy = lambda m: repl("FINAL(llm_query('x'))") if m[0]["role"] == "system" else "sub"  # noqa: E731
    with ModelServer(policy) as server:
        rlm = RLM(model="openai/policy", sub_model="scripted/echo", api_base=server.url)
        assert rlm.transports == {"model": "direct", "sub_model": "litellm"}
        assert type(rlm.models.root).__name__ == "OpenAICompatibleLM" and type(rlm.models.sub).__name__ == "LiteLLM"
        result = RLM(model="openai/policy", api_base=server.url).completion("c", "q")
    settings = result.trace.events[0].data["settings"]
    assert settings["transport"] == "auto" and settings["transports"] == {"model": "direct", "sub_model": "direct"}
    assert RLM(model="openai/policy", api_base=server.url, transport="litellm").transports["model"] == "litellm"


HEAVY = ("litellm", "IPython", "ipykernel", "ipywidgets", "nbformat", "jupyter_client")


@pytest.mark.parametrize("model", ["openai/policy", "anthropic/claude-sonnet-4-5"])  # a priced Anthropic model
def test_a_whole_direct_rlm_run_imports_neither_litellm_nor_jupyter(model, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("some text\n")
    policy = "rlm_kernel.bench.figures.features:OneRootOneSub"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "rlm_kernel.cli", "serve-model", "--policy", policy], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        api_base = url.removesuffix("/v1") if model.startswith("anthropic/") else url
        command = ["run", "--context", str(doc), "--model", model, "--api-base", api_base, "--query", "what?"]
        run = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "rlm_kernel.cli", *command],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
        server.stdout.close()
    assert run.returncode == 0, run.stderr[-2000:]
    assert "sub:q:some text" in run.stdout  # the server reported usage, so nothing was counted here
    imported = {line.split("|")[-1].strip().split(".")[0] for line in run.stderr.splitlines() if "import time:" in line}
    assert "aiohttp" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_without_litellm_installed_the_direct_path_works_with_prices_unknown(tmp_path):
    # A finder that makes `litellm` look uninstalled, for this interpreter only.
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class NoLitellm:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'litellm' or name.startswith('litellm.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, NoLitellm())\n"
    )
    code = (
        "from rlm_kernel import RLM\n"
        "from rlm_kernel.models.server import ModelServer\n"
        "from rlm_kernel.bench.figures.features import OneRootOneSub\n"
        "with ModelServer(OneRootOneSub(), omit_usage=True) as s:\n"
        "    r = RLM(model='openai/gpt-4o-mini', api_base=s.url).completion('c', 'q')\n"
        "    p = RLM(model='openai/x', api_base=s.url, prices={'openai/x': {'input': 1, 'output': 2}}).completion('c', 'q')\n"
        "print(r.answer, r.usage.cost_known, r.usage.counted_calls, p.usage.cost_known)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["sub:q:c", "False", "2", "True"]
