"""What the frontend receives from a real `rlm` kernel (iopub), set up as the README documents it."""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import start_new_kernel

from rlm_kernel.models.server import ModelServer
from tests.conftest import repl

pytestmark = pytest.mark.timeout(240)


@contextmanager
def kernel(**env: str) -> Iterator[BlockingKernelClient]:
    """An `rlm` kernel whose environment has `env` added, as a user's shell or kernelspec would set it."""
    km, kc = start_new_kernel(kernel_name="rlm", env={**os.environ, **env})
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


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


def shown_text(messages: list[dict[str, Any]]) -> str:
    """Everything printed to stdout / stderr and every error, as one string."""
    parts = []
    for msg in messages:
        content = msg["content"]
        if msg["msg_type"] == "stream":
            parts.append(content["text"])
        elif msg["msg_type"] == "error":
            parts.append("\n".join(content["traceback"]))
    return "".join(parts)


def results(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "execute_result"]


def test_the_model_from_the_environment_answers_a_cell_without_model(tmp_path):
    """RLM_MODEL and RLM_API_BASE in the kernel's environment: `%%rlm` with no --model uses them."""
    with ModelServer(lambda messages: repl("FINAL('from the environment')")) as server:
        with kernel(RLM_MODEL="openai/policy", RLM_API_BASE=server.url) as kc:
            execute(kc, "doc = 'text'")
            content, messages = execute(kc, "%%rlm --context doc\nWhat is it?")
            assert content["status"] == "ok", shown_text(messages)
            assert results(messages) == ["from the environment"]
            assert "Traceback" not in shown_text(messages)
            content, messages = execute(kc, "print(rlm_last.trace.root.model)")
            assert shown_text(messages).strip() == "openai/policy"
        assert server.stats()["requests"] >= 1


def test_the_settings_table_with_the_model_from_the_environment_and_a_cost_budget():
    with kernel(RLM_MODEL="openai/unpriced-model") as kc:
        content, messages = execute(kc, "%config RLMMagics.max_cost_usd = 1.0\n%rlm config")
        assert content["status"] == "ok", shown_text(messages)
        shown = [m["content"]["data"]["text/plain"] for m in messages if m["msg_type"] == "display_data"]
        assert any("openai/unpriced-model" in text and "$RLM_MODEL" in text for text in shown), shown
        assert any("Warning" in text and "openai/unpriced-model" in text for text in shown), shown
