"""litellm's price map read without litellm: the same prices and windows as litellm, the same provider lists,
and a whole OpenAI-compatible run that never imports litellm (nor any Jupyter package)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_kernel import RLM
from rlm_kernel.core import price_map
from rlm_kernel.core.lm import import_litellm
from rlm_kernel.core.openai_compatible import OpenAICompatibleLM, picks_direct
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
        ("anthropic/claude-3-5-sonnet", "http://h/v1", None, False),  # litellm maps Anthropic's format
        ("ollama/llama3", "http://h/v1", None, False),
        ("openai/gpt-4o-mini", None, None, False),  # the cloud: litellm maps parameters per provider
        ("openai/policy", "http://h/v1", [{"model_name": "m"}], False),
        ("scripted/demo", "http://h/v1", None, False),
    ],
)
def test_auto_picks_direct_only_for_openai_compatible_servers(model, api_base, router, direct):
    assert picks_direct(model, api_base, router) is direct


def test_each_model_gets_its_own_transport_and_the_trace_records_it():
    policy = lambda m: repl("FINAL(llm_query('x'))") if m[0]["role"] == "system" else "sub"  # noqa: E731
    with ModelServer(policy) as server:
        rlm = RLM(model="openai/policy", sub_model="scripted/echo", api_base=server.url)
        assert rlm.transports == {"model": "direct", "sub_model": "litellm"}
        assert type(rlm.lm).__name__ == "OpenAICompatibleLM" and type(rlm.sub_lm).__name__ == "LiteLLM"
        result = RLM(model="openai/policy", api_base=server.url).completion("c", "q")
    settings = result.trace.events[0].data["settings"]
    assert settings["transport"] == "auto" and settings["transports"] == {"model": "direct", "sub_model": "direct"}
    assert RLM(model="openai/policy", api_base=server.url, transport="litellm").transports["model"] == "litellm"


HEAVY = ("litellm", "IPython", "ipykernel", "ipywidgets", "nbformat", "jupyter_client")


def test_a_whole_direct_rlm_run_imports_neither_litellm_nor_jupyter(tmp_path):
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
        command = ["run", "--context", str(doc), "--model", "openai/policy", "--api-base", url, "--query", "what?"]
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
