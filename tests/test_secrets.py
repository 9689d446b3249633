"""API keys never reach a prompt, a trace, a view or an error message."""

from __future__ import annotations

import json

from rlm_kernel import RLM
from rlm_kernel.formats.html import render_html
from tests.conftest import repl

FAKE_ENV_KEY = "sk-fake-env-0123456789abcdef"
FAKE_TOKEN = "hf_faketoken_9876543210"
FAKE_ARG_KEY = "sk-fake-arg-key-55555555"


def test_planted_keys_appear_nowhere(scripted, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_ENV_KEY)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    sent: list[str] = []

    def policy(messages):
        sent.append(json.dumps(messages))
        if messages[0]["role"] != "system":
            return "sub saw: " + messages[-1]["content"]
        if len(messages) == 2:
            return repl(
                "import os\n"
                "print(os.environ['OPENAI_API_KEY'], os.environ['HF_TOKEN'])\n"
                f"echo = llm_query('my key is ' + os.environ['OPENAI_API_KEY'] + ' and {FAKE_ARG_KEY}')\n"
                "print(echo)\n"
                "raise ValueError(os.environ['HF_TOKEN'])"
            )
        return repl("FINAL(echo + ' ' + os.environ['OPENAI_API_KEY'])")

    trace_file = tmp_path / "trace.jsonl"
    context = f"notes with a leaked key {FAKE_ENV_KEY} inside"
    result = RLM(model=scripted(policy), api_key=FAKE_ARG_KEY, trace_path=str(trace_file)).completion(context, "q")
    assert result.status == "done"
    written = [trace_file.read_text(), render_html(result.trace), result.trace.outline(), *sent]
    written += [json.dumps(e.data) for e in result.trace.events]
    for text in written:
        for secret in (FAKE_ENV_KEY, FAKE_TOKEN, FAKE_ARG_KEY):
            assert secret not in text
    assert "[redacted]" in trace_file.read_text()
    # The Python value the user gets back is theirs, unredacted: only what is written or sent is cleaned.
    assert FAKE_ENV_KEY in result.answer
