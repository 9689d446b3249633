"""Replies real models write (issue 23 item 12), served over HTTP: what the user gets and what the trace says."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.parsing import parse_reply
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block, turn


def test_a_prose_final_of_a_variable_submits_its_value_and_the_trace_says_so():
    # gpt-4o's reply, recorded: it made `random_number`, then wrote FINAL(random_number) outside code.
    def root(messages):
        if turn(messages) == 0:
            return block("random_number = 7 * 6\nprint(random_number)")
        return "The number is ready.\nFINAL(random_number)"

    events: list[Any] = []
    with ModelServer(Recorder(root)) as server:
        result = RLM(model="openai/policy", api_base=server.url, on_event=events.append).completion("c", "q")
    assert (result.status, result.answer) == ("done", 42)
    end = next(e for e in events if e.kind == "call_end")
    assert "REPL variable random_number" in end.data["answer_from"]


def test_a_prose_final_of_a_word_that_is_no_variable_stays_text():
    with ModelServer(Recorder(lambda messages: "FINAL(Paris)")) as server:
        events: list[Any] = []
        result = RLM(model="openai/policy", api_base=server.url, on_event=events.append).completion("c", "q")
    assert result.answer == "Paris"
    assert "answer_from" not in next(e for e in events if e.kind == "call_end").data


async def fetch_title(page: int) -> str:
    """Fetch a page's title."""
    await asyncio.sleep(0.01)
    return f"title {page}"


def test_an_async_tool_is_awaited():
    root = lambda messages: block("FINAL(fetch_title(3))")  # noqa: E731
    with ModelServer(Recorder(root)) as server:
        result = RLM(model="openai/policy", api_base=server.url, tools=[fetch_title]).completion("c", "q")
    assert (result.status, result.answer) == ("done", "title 3")


def shout(text: str) -> str:
    return text.upper()


def other_shout(text: str) -> str:
    return text


other_shout.__name__ = "shout"


@pytest.mark.parametrize(
    "tools, message",
    [
        ({"print": shout}, "would replace Python's builtin print"),
        ({"for": shout}, "'for' is a Python keyword"),
        ({"FINAL": shout}, "taken by the REPL's own FINAL"),
        ({"context": shout}, "taken by the REPL's own context"),
        ([shout, other_shout], "two tools are named 'shout'"),
    ],
)
def test_tool_names_the_repl_cannot_bind_as_named_are_refused_at_rlm(tools, message):
    with ModelServer(Recorder(lambda messages: "FINAL(1)")) as server:
        with pytest.raises(ConfigError, match=message) as refused:
            RLM(model="openai/policy", api_base=server.url, tools=tools)
        assert server.stats()["requests"] == 0
    assert "\n" not in str(refused.value)


def test_every_bad_tool_name_is_named_in_one_error():
    with pytest.raises(ConfigError) as refused:
        RLM(model="openai/policy", tools={"print": shout, "for": shout, "ok": shout})
    assert "print" in str(refused.value) and "'for'" in str(refused.value) and "'ok'" not in str(refused.value)


@pytest.mark.parametrize(
    "reply",
    [
        "Let me look.\n```\n```repl\nx = 6 * 7\nFINAL(x)\n```\n```\n",
        "Let me look.\n```\n\n```python\nx = 6 * 7\nFINAL(x)\n```\n\n```\nThat should do it.\n",
        "```markdown\n```repl\nx = 6 * 7\nFINAL(x)\n```\n```",
    ],
)
def test_a_block_wrapped_in_an_extra_fence_runs_as_meant(reply):
    assert parse_reply(reply).blocks == ["x = 6 * 7\nFINAL(x)\n"]
    with ModelServer(Recorder(lambda messages: reply)) as server:
        result = RLM(model="openai/policy", api_base=server.url).completion("c", "q")
    assert (result.status, result.answer) == ("done", 42)


def test_prose_after_a_wrapped_block_stays_prose():
    parsed = parse_reply("```\n```repl\nx = 1\n```\n```\nNow FINAL below.\n```repl\ny = 2\n```")
    assert parsed.blocks == ["x = 1\n", "y = 2\n"] and "Now FINAL below." in parsed.prose


class RaisingSubLM:
    """An LM plug-in whose sub-calls raise a plain exception (not a ModelError)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def acomplete(self, messages: Any, **kwargs: Any) -> Any:
        if messages[0]["role"] != "system" and "bad" in str(messages[-1]["content"]):
            raise RuntimeError("the plug-in broke")
        return await self.inner.acomplete(messages, **kwargs)


def test_a_sub_call_whose_lm_raised_is_recorded_as_an_error_before_the_run_ends():
    def root(messages):
        if turn(messages) == 0:
            return block("replies = llm_query_batched(['good', 'bad', 'good too'])\nprint(replies)")
        return block("FINAL(replies)")

    events: list[Any] = []
    with ModelServer(Recorder(root)) as server:
        served = RLM(model="openai/policy", api_base=server.url).models.root
        rlm = RLM(model="openai/policy", lm=RaisingSubLM(served), on_event=events.append)
        result = rlm.completion("c", "q")
    assert result.status == "done"
    assert result.answer[0] == "sub:good" and result.answer[2] == "sub:good too"
    assert "RuntimeError: the plug-in broke" in result.answer[1]
    kinds = [e.kind for e in events]
    ends = [e for e in events if e.kind == "subcall_end"]
    assert len(ends) == 3 and all(kinds.index("call_end") > events.index(e) for e in ends)
    failed = [e.data for e in ends if e.data.get("error")]
    assert len(failed) == 1 and "RuntimeError: the plug-in broke" in failed[0]["error"]
