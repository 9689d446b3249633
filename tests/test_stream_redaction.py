"""Streaming redaction: a secret the model writes while it streams, split across pieces, never reaches the
model_text events (and so the live views, the JSONL trace and the notebook's widget), on both transports."""

from __future__ import annotations

import time

import pytest

from rlm_kernel import RLM
from rlm_kernel.models.server import ModelServer
from tests.conftest import repl

SECRET = "s3cr3t-value-0123456789"
SHAPED = "sk-" + "A1b2C3d4E5f6G7h8I9j0"


@pytest.mark.parametrize("transport", ["auto", "litellm"])
@pytest.mark.parametrize("secret", [SECRET, SHAPED])
def test_a_secret_split_across_streamed_pieces_is_redacted(monkeypatch, transport, secret):
    monkeypatch.setenv("MY_SERVICE_KEY", SECRET)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    cut = len(secret) // 2

    def writer(messages):
        yield f"The key is {secret[:cut]}"
        time.sleep(0.3)  # the engine shows what it has before the rest arrives
        yield secret[cut:] + " and that is all.\n" + repl("FINAL('ok')")

    events = []
    with ModelServer(writer) as server:
        result = RLM(
            model="openai/policy", api_base=server.url, transport=transport, stream=True, on_event=events.append
        ).completion("c", "q")
    assert result.answer == "ok"
    texts = [e.data["text"] for e in events if e.kind == "model_text"]
    assert len(texts) >= 2  # it did stream in more than one piece
    joined = "".join(texts)
    assert secret[:cut] not in joined and secret[cut:] not in joined
    assert joined == result.trace.root.iterations[0].reply and "The key is [redacted] and that is all." in joined
