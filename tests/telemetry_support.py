"""What the OpenTelemetry tests share: a depth-2 run with a fan-out against a model server that counts tokens."""

from __future__ import annotations

import threading
from typing import Any

from rlm_kernel.models.wire import usage_of
from tests.conftest import question_of, repl

# A key the redactor knows (the run's own api_key): planted in the model's code and output, it must reach no span.
SECRET = "sk-live-telemetry-3d9f2a7c41b8e605"
PRICES = {"openai/policy": {"input": 1.0, "output": 2.0}}  # dollars per million tokens: a cost to check

ROOT_CODE = (
    "outs = rlm_query_batched([(context[:20], 'child ok'), (context[20:40], 'child fails')])\n"
    "note = llm_query('Summarise: ' + context[:30])\n"
    f"print('key', {SECRET!r})\n"
    "print(outs, note)"
)


class CountingPolicy:
    """The server's replies for a depth-2 run; counts the tokens it reports, as the server sends them."""

    def __init__(self) -> None:
        self.input_tokens = self.output_tokens = self.requests = self.failures = 0
        self._lock = threading.Lock()

    def reply(self, messages: list[dict[str, Any]]) -> str:
        if messages[0]["role"] != "system":
            return "a plain summary"  # llm_query
        question = question_of(messages)
        if question == "child fails":
            raise RuntimeError("the model server broke")  # a 500: this child's model call fails
        if question == "child ok":
            return repl("FINAL('child answer: ' + context[:5])")
        if len(messages) > 2:
            return repl("FINAL('root answer')")
        return repl(ROOT_CODE)

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        try:
            text = self.reply(messages)
        except RuntimeError:
            with self._lock:
                self.failures += 1
            raise
        usage = usage_of(messages, text)  # what the server reports for this reply
        with self._lock:
            self.requests += 1
            self.input_tokens += usage["prompt_tokens"]
            self.output_tokens += usage["completion_tokens"]
        return text


def run_settings(url: str) -> dict[str, Any]:
    """The run's settings: the depth-2 tree, priced, with a key the redactor must keep out."""
    return {
        "model": "openai/policy",
        "api_base": url,
        "api_key": SECRET,
        "max_depth": 2,
        "retries": 0,
        "prices": PRICES,
        "temperature": 0.25,
    }
