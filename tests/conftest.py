"""Shared fixtures: every test runs offline; models are scripted policies reached through litellm."""

from __future__ import annotations

import os
import queue

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient

from rlm_kernel.jupyter.install import install
from rlm_kernel.models.policies import register_policy


@pytest.fixture(scope="session", autouse=True)
def rlm_spec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The `rlm` kernelspec installed into a temporary prefix that is first on JUPYTER_PATH.

    Session-wide and autouse so that kernel tests (including unittest-style setUpClass)
    find it; IPYTHONDIR keeps kernels' history and profiles out of ~/.ipython.
    """
    prefix = tmp_path_factory.mktemp("prefix")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
        mp.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))
        yield Path(install(prefix=str(prefix)))


def question_of(messages: list[dict[str, Any]]) -> str:
    """The question an RLM node was asked (its first user message starts with it)."""
    return str(messages[1]["content"]).split("\n", 1)[0].removeprefix("Question: ")


# Model code that interrupts its own process as the kernel's stop button does (a `raise KeyboardInterrupt`
# written by the model is an error in its code, not the user's stop).
SIGINT_SELF = "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nimport time\ntime.sleep(5)"


def repl(code: str, prose: str = "Working on it.") -> str:
    """A model reply with one ```repl block."""
    return f"{prose}\n```repl\n{code}\n```\n"


@pytest.fixture
def scripted() -> Callable[..., str]:
    """Register replies (a list) or a policy function; returns the litellm model name."""

    def make(policy: Sequence[str] | Callable[[list[dict[str, Any]]], str]) -> str:
        return register_policy(policy)

    return make


@pytest.fixture(params=["auto", "litellm"])
def each_transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test on the default transport (direct for a local server) and again through litellm's HTTP path."""
    monkeypatch.setenv("RLM_TRANSPORT", request.param)
    return str(request.param)


@pytest.fixture
def ip(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh InteractiveShell with the extension loaded, and no model settings from the environment."""
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    for name in ("RLM_MODEL", "RLM_SUB_MODEL", "RLM_API_BASE"):
        monkeypatch.delenv(name, raising=False)
    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryAccessor.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.extension_manager.load_extension("rlm_kernel")
    yield shell
    InteractiveShell.clear_instance()


def run(ip: Any, source: str) -> Any:
    """Run a cell; return its value, re-raising what the cell raised."""
    result = ip.run_cell(source, store_history=False)
    if result.error_before_exec or result.error_in_exec:
        raise result.error_before_exec or result.error_in_exec
    return result.result


def execute(kc: BlockingKernelClient, code: str, timeout: float = 120) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run `code`; its reply's content and every iopub message it caused, up to its idle status."""
    msg_id = kc.execute(code)
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    messages = []
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            break
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        messages.append(msg)
    return reply["content"], messages


@pytest.fixture
def spans() -> Iterator[Any]:
    """Every span the runs of a test send, kept in memory (an InMemorySpanExporter); for the OpenTelemetry tests,
    whose modules skip where the otel extra is not installed."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from rlm_kernel.telemetry import TextPolicy, set_tracer_provider

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    set_tracer_provider(provider, TextPolicy(max_chars=300))
    yield exporter
    provider.shutdown()
