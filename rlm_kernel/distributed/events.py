"""Live events from the workers: each worker's run pushes its events, in small bundles, to its batch's channel on
the driver's hub (shared.py); the driver drains it a few times a second. Nothing here depends on arrival order across workers: each event names its
question and node, and `Progress` counts from the events' own fields."""

from __future__ import annotations

import sys
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any, TextIO

import ray

from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import Event
from rlm_kernel.distributed.shared import Delivery, HubKey, driver_hub

FLUSH_EVERY_S = 0.2  # a worker sends its events at most about this long after they happened


class EventChannel(HubKey):
    """A batch's events on the hub: workers push, the driver drains (pickles as the hub's handle and the key)."""

    @classmethod
    def create(cls, hub: Any = None) -> EventChannel:
        """A new channel on `hub` (default: this driver's)."""
        channel = cls(hub or driver_hub(), uuid.uuid4().hex)
        ray.get(channel.hub.open_channel.remote(channel.key))
        channel._drop_when_collected()
        return channel

    def push(self, events: list[Delivery]) -> None:
        self.hub.push.remote(self.key, events)

    def drain(self) -> list[Delivery]:
        drained: list[Delivery] = ray.get(self.hub.drain.remote(self.key))
        return drained


class EventSender:
    """The event handler of a question's run on a worker. `(index, None)` says the question started.

    Events go in bundles: at once when FLUSH_EVERY_S has passed since the last bundle (and the root's end at once),
    and otherwise within about FLUSH_EVERY_S from this worker process's flusher thread, so that the events before a
    long model call or code block reach the driver while it lasts, not when the next event comes."""

    def __init__(self, channel: EventChannel | None, index: int) -> None:
        self.channel, self.index = channel, index
        self.buffer: list[Delivery] = []
        self.last = time.monotonic()
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            self.buffer.append((self.index, None))
        self.flush()
        _flusher().add(self)

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.buffer.append((self.index, event))
        if time.monotonic() - self.last >= FLUSH_EVERY_S or (event.kind == "call_end" and event.parent_id is None):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            bundle, self.buffer, self.last = self.buffer, [], time.monotonic()
            if bundle and self.channel is not None:  # under the lock: bundles reach the hub in their order
                self.channel.push(bundle)

    def due(self) -> bool:
        return bool(self.buffer) and time.monotonic() - self.last >= FLUSH_EVERY_S


class _Flusher:
    """One thread a worker process: every FLUSH_EVERY_S it sends what its questions' senders hold and is due."""

    def __init__(self) -> None:
        self.senders: weakref.WeakSet[EventSender] = weakref.WeakSet()
        threading.Thread(target=self._run, name="rlm-event-flush", daemon=True).start()

    def add(self, sender: EventSender) -> None:
        self.senders.add(sender)

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY_S / 2)
            for sender in list(self.senders):
                if sender.due():
                    try:
                        sender.flush()
                    except Exception:  # the hub is gone (the batch ended): the run's own result still comes back
                        self.senders.discard(sender)


_the_flusher: _Flusher | None = None
_flusher_lock = threading.Lock()


def _flusher() -> _Flusher:
    global _the_flusher
    with _flusher_lock:
        if _the_flusher is None:
            _the_flusher = _Flusher()
        return _the_flusher


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

    def finished(self, result: RLMResult, index: int | None = None) -> None:
        if index is not None:  # no longer running: `line` counts it as done or failed
            self.running.discard(index)
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
