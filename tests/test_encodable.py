"""Text that cannot be encoded (issue 13, item 10): a lone surrogate in a model's reply, a file name that is not
UTF-8. The run goes on, nothing is charged for an attempt that never left the machine, and the trace is whole."""

from __future__ import annotations

import os

from rlm_kernel import RLM
from rlm_kernel.core.trace import Trace
from rlm_kernel.loaders import load_context
from rlm_kernel.models.server import ModelServer
from tests.conftest import repl


def test_a_lone_surrogate_in_a_reply_neither_fails_the_run_nor_cuts_the_trace(tmp_path):
    def policy(messages):
        if sum(m["role"] == "assistant" for m in messages) == 0:
            return "Odd text \ud800 here.\n" + repl("word = 'caf\\udce9'\nprint(word)")
        return repl("FINAL('done')")

    trace_path = tmp_path / "run.jsonl"
    with ModelServer(policy) as server:
        result = RLM(model="openai/policy", api_base=server.url, trace_path=str(trace_path)).completion("t", "q")
        requests = server.stats()["requests"]
    assert result.status == "done" and result.answer == "done", result.error
    assert requests == result.usage.llm_calls == 2  # no retried, charged attempt
    recorded = Trace.from_jsonl(trace_path)
    assert recorded.root.status == "done" and "\ud800" in recorded.root.iterations[0].reply


def test_a_file_name_that_is_not_utf8_loads_and_reaches_the_model(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "plain.txt").write_text("hello", encoding="utf-8")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.txt"), "wb") as f:
        f.write(b"odd name")
    context = load_context(str(folder))
    seen: list[list[dict[str, str]]] = []

    def policy(messages):
        seen.append(messages)
        if len(messages) == 2:
            return repl("for d in context:\n    print(d['path'])")  # the odd name goes into the next prompt
        return repl("FINAL('listed')")

    with ModelServer(policy) as server:
        result = RLM(model="openai/policy", api_base=server.url).completion(context, "which files?")
    assert result.status == "done" and result.answer == "listed", result.error
    assert result.usage.llm_calls == 2  # nothing retried
    assert "plain.txt" in seen[1][-1]["content"]
