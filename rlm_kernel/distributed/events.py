"""Live events from the workers: each worker's run pushes its events, in small bundles, to its batch's channel on
the driver's hub (shared.py); the driver drains it a few times a second. Nothing here depends on arrival order across workers: each event names its
question and node, and `Progress` counts from the events' own fields."""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import TextIO

import ray

from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import Event
from rlm_kernel.distributed.shared import Delivery, HubKey, driver_hub

FLUSH_EVERY_S = 0.2  # a worker sends its events at most this long after they happened


class EventChannel(HubKey):
    """A batch's events on the hub: workers push, the driver drains (pickles as the hub's handle and the key)."""

    @classmethod
    def create(cls) -> EventChannel:
        channel = cls(driver_hub(), uuid.uuid4().hex)
        ray.get(channel.hub.open_channel.remote(channel.key))
        channel._drop_when_collected()
        return channel

    def push(self, events: list[Delivery]) -> None:
        self.hub.push.remote(self.key, events)

    def drain(self) -> list[Delivery]:
        drained: list[Delivery] = ray.get(self.hub.drain.remote(self.key))
        return drained


class EventSender:
    """The event handler of a question's run on a worker. `(index, None)` says the question started."""

    def __init__(self, channel: EventChannel | None, index: int) -> None:
        self.channel, self.index = channel, index
        self.buffer: list[Delivery] = []
        self.last = time.monotonic()

    def started(self) -> None:
        self.buffer.append((self.index, None))
        self.flush()

    def __call__(self, event: Event) -> None:
        self.buffer.append((self.index, event))
        if time.monotonic() - self.last >= FLUSH_EVERY_S or (event.kind == "call_end" and event.parent_id is None):
            self.flush()

    def flush(self) -> None:
        if self.buffer and self.channel is not None:
            self.channel.push(self.buffer)
        self.buffer, self.last = [], time.monotonic()


@dataclass
class Progress:
    """A batch on the cluster as the driver sees it: questions queued / running / done / failed, and what the
    finished and running questions used (from their `iteration` and `subcall_end` events, then their results)."""

    queued: int = 0
    submitted: int = 0
    running: set[int] = field(default_factory=set)
    done: int = 0
    failed: int = 0
    retried: int = 0
    usage: Usage = field(default_factory=Usage)
    events: int = 0
    started: float = field(default_factory=time.monotonic)

    def saw(self, index: int, event: Event | None) -> None:
        self.events += event is not None
        if event is None:
            self.running.add(index)
        elif event.kind == "iteration":
            used = event.data.get("usage") or {}
            self.usage.llm_calls += 1
            self.usage.input_tokens += int(used.get("input_tokens", 0))
            self.usage.output_tokens += int(used.get("output_tokens", 0))
            self.usage.cost_usd += float(used.get("cost_usd", 0.0))

    def finished(self, result: RLMResult) -> None:
        if result.status in ("done", "max_iterations"):
            self.done += 1
        else:
            self.failed += 1

    def line(self) -> str:
        waiting = self.queued - self.done - self.failed - len(self.running)
        return (
            f"{self.done} done, {self.failed} failed, {max(0, waiting)} queued; "
            f"{self.usage.llm_calls} calls, {self.usage.tokens:,} tokens, ${self.usage.cost_usd:.4f}; "
            f"{time.monotonic() - self.started:.0f} s"
        )

    def print_line(self, stream: TextIO | None = None) -> None:
        print("\r" + self.line(), end="", file=stream or sys.stderr, flush=True)
