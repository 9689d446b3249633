"""`%%rlm --approve` in a real rlm kernel: the frontend answers each block's input request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from tests.conftest import repl

pytestmark = pytest.mark.kernel

ROOT_REPLIES = [
    repl("kept = 1") + "```repl\ndropped = 1\n```\n",
    repl("kids = rlm_query_batched([('abc', 'upper')])"),
    repl("FINAL(kids[0])"),
]
SETUP = (
    "from rlm_kernel.models.policies import register_policy\n"
    f"register_policy({ROOT_REPLIES!r}, name='approve-root')\n"
    f"register_policy({[repl('FINAL(context.upper())')]!r}, name='approve-child')\n"
    "doc = 'some text'\n"
)
RUN = "%%rlm --approve --context doc --model scripted/approve-root --sub-model scripted/approve-child --depth 2\nq"


@pytest.fixture
def client() -> Iterator[Any]:
    manager = KernelManager(kernel_name="rlm")
    manager.start_kernel()
    kc = manager.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    try:
        yield kc
    finally:
        kc.stop_channels()
        manager.shutdown_kernel(now=True)


def _execute(
    kc: Any, code: str, answers: list[str] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """Run `code`; answer input requests from `answers` in order. Returns the reply, the outputs and the prompts."""
    outputs: list[dict[str, Any]] = []
    prompts: list[str] = []

    def on_input(msg: dict[str, Any]) -> None:
        prompts.append(msg["content"]["prompt"])
        kc.input(answers.pop(0) if answers else "n")

    reply = kc.execute_interactive(
        code, timeout=60, allow_stdin=answers is not None, stdin_hook=on_input, output_hook=outputs.append
    )
    return reply, outputs, prompts


def _texts(outputs: list[dict[str, Any]]) -> str:
    parts = []
    for out in outputs:
        content = out["content"]
        parts.append(
            str(content.get("data", {}).get("text/plain", "")) + content.get("text", "") + content.get("evalue", "")
        )
    return "\n".join(parts)


def test_each_block_runs_only_when_the_user_says_yes_children_included(client):
    assert _execute(client, SETUP)[0]["content"]["status"] == "ok"
    reply, outputs, prompts = _execute(client, RUN, answers=["y", "n", "y", "y", "y"])

    assert reply["content"]["status"] == "ok", _texts(outputs)
    assert prompts == ["Run it? [y/N] "] * 5
    shown = _texts(outputs)
    assert "n0** (depth 0) wants to run this block" in shown and "(depth 1) wants to run this block" in shown
    assert "dropped = 1" in shown  # the block was shown before it was declined
    assert shown.rstrip().endswith("\nABC")  # the child's answer, through the root, shown as written
    reply, outputs, _ = _execute(client, "print(kept, 'dropped' in dir())")
    assert "1 False" in _texts(outputs)


def test_a_frontend_without_input_is_refused_and_the_kernel_lives_on(client):
    assert _execute(client, SETUP)[0]["content"]["status"] == "ok"
    reply, outputs, _ = _execute(client, RUN)  # allow_stdin=False, as nbconvert and papermill send
    assert reply["content"]["status"] == "error"
    assert "cannot answer input requests" in _texts(outputs)
    assert "Traceback" not in _texts(outputs)
    reply, outputs, _ = _execute(client, "print('kept' in dir(), 1 + 1)")
    assert "False 2" in _texts(outputs)
