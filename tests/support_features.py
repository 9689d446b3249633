"""Policies served over HTTP for the feature tests (sessions, tools, typed answers, cache, batches)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

Messages = list[dict[str, Any]]


class Recorder:
    """A policy that records every request it is sent and answers root calls with `root(messages)`."""

    def __init__(self, root: Callable[[Messages], str], sub: Callable[[str], str] | None = None) -> None:
        self.root, self.sub = root, sub or (lambda prompt: "sub:" + prompt)
        self.requests: list[Messages] = []
        self._lock = threading.Lock()

    def __call__(self, messages: Messages) -> str:
        with self._lock:
            self.requests.append(messages)
        if messages[0]["role"] == "system":
            return self.root(messages)
        return self.sub(str(messages[-1]["content"]))

    def roots(self) -> list[Messages]:
        with self._lock:
            return [m for m in self.requests if m[0]["role"] == "system"]


def turn(messages: Messages) -> int:
    """How many replies the root has already made in this conversation."""
    return sum(1 for m in messages if m["role"] == "assistant")


def question(messages: Messages) -> str:
    first = str(messages[1]["content"])
    return first.split("Question: ", 1)[1].split("\n", 1)[0] if "Question: " in first else ""


def block(code: str) -> str:
    return f"Working.\n```repl\n{code}\n```\n"
