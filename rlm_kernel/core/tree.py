"""What every node of one call tree shares: the config, the model clients, the budget and call slots, the cancel scope,
the event stream, the approver."""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from rlm_kernel.core.aio import CancelScope, RunCancelled
from rlm_kernel.core.approve import Approver
from rlm_kernel.core.clients import Models
from rlm_kernel.core.config import RunConfig
from rlm_kernel.core.deadlines import Deadline
from rlm_kernel.core.ledger import Budget, Usage
from rlm_kernel.core.redact import Redactor
from rlm_kernel.core.repl import REPL
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.slots import Slots
from rlm_kernel.core.trace import Event, EventHandler, JSONLWriter, Trace
from rlm_kernel.core.values import encodable


@dataclass
class Outcome:
    """How one node ended."""

    status: str
    answer: Any = None
    error: str | None = None
    limit: str | None = None
    answer_from: str | None = None  # where a text answer came from when not as written (a variable's value)


class CallTree:
    """The shared state of one run: every node of the tree draws on it, from whatever thread it runs in."""

    def __init__(
        self,
        config: RunConfig,
        models: Models,
        scope: CancelScope,
        approver: Approver | None,
        *,
        budget: Budget,
        slots: Slots,
        on_event: list[EventHandler],
        new_repl: Callable[[], REPL],
        fan_out: Callable[[Any, list[Any]], list[Any]] | None = None,
        id_space: str = "",
    ) -> None:
        """`fan_out(node, queued)`: runs the children of a node's `rlm_query_batched` elsewhere (core/fanout.py;
        None: threads of this process); `id_space`: what this tree's node and sub-call ids start with (a child run
        in another process: its own id and a dot)."""
        self.config, self.models, self.new_repl = config, models, new_repl
        self.fan_out, self.id_space = fan_out, id_space
        # A batch passes a budget that also charges the batch's, and one set of slots for all its questions.
        self.budget, self.slots = budget, slots
        self.approver = approver
        self._approval_lock = threading.Lock()  # children ask from their threads: one question at a time
        self._approving: Deadline | None = None  # the wait for the user's answer
        self.redactor = Redactor(config.secrets)
        self.scope = scope
        self.trace = Trace()
        self.started = time.perf_counter()
        self._ids = {"n": itertools.count(), "s": itertools.count()}  # nodes n0, n1...; sub-calls s0, s1...
        self._emit_lock = threading.Lock()
        self._writer = JSONLWriter(config.trace_path) if config.trace_path else None
        self._handlers: list[EventHandler] = [self.trace.add, *([self._writer] if self._writer else []), *on_event]
        self.closed = False
        self.handler_errors: list[str] = []
        self._children: dict[Deadline, str] = {}  # the children of rlm_query_batched running now, by thread name
        self._child_lock = threading.Lock()
        self._redacted: dict[str, str] = {}
        self.tokens_per_char = 0.0  # the most input tokens a character the provider has reported in this run
        self.samples: collections.Counter[str] = collections.Counter()  # sampled calls so far, by cache key

    def redacted(self, text: str) -> str:
        """`text` redacted and made encodable, remembered: a node resends its whole history with every call, and the redactor's
        patterns cost about 35 us a KB, so each message is scanned once, not once per call."""
        done = self._redacted.get(text)
        if done is None:
            if len(self._redacted) > 10_000:
                self._redacted.clear()
            done = self._redacted[text] = encodable(self.redactor.text(text))
        return done

    def new_id(self, prefix: str) -> str:
        return f"{self.id_space}{prefix}{next(self._ids[prefix])}"

    def emit(self, kind: str, node_id: str, parent_id: str | None, /, **data: Any) -> None:
        self.replay(Event(kind, node_id, parent_id, self.redactor.data(data)))

    def replay(self, event: Event) -> None:
        """Pass an event to the trace and every handler: one of this tree's own, or one a child run in another
        process emitted (redacted there, under the same config)."""
        with self._emit_lock:
            if self.closed:  # the run has ended: a call that unwinds late changes nothing in its trace
                return
            for handler in self._handlers:
                try:
                    handler(event)
                except Exception as exc:  # a broken view must not break the run
                    if not self.handler_errors:
                        print(f"rlm_kernel: event handler failed: {exc!r}", file=sys.stderr)
                    self.handler_errors.append(repr(exc))

    def approves(self, code: str, node_id: str, depth: int) -> bool:
        if self.approver is None:
            return True
        with self._approval_lock:
            if self.scope.cancelled.is_set():
                raise RunCancelled()
            with Deadline(math.inf, raises=RunCancelled) as self._approving:
                try:
                    return bool(self.approver(code, node_id, depth))
                finally:
                    self._approving = None

    def stop_approval(self) -> None:
        """An interrupt reaches only the main thread: a child waiting for the user's answer is stopped here."""
        waiting = self._approving
        if waiting is not None and waiting.thread != threading.main_thread().ident:
            waiting.stop()

    def close_open_nodes(self, why: str = "interrupted") -> None:
        """Every sub-call still unwinding ends as cancelled, every open node as interrupted; later events are dropped."""
        seconds = time.perf_counter() - self.started
        for node in list(self.trace.nodes.values()):
            for sub in node.subcalls:
                if not sub.done:
                    cancelled = {"subcall_id": sub.id, "error": "cancelled", "usage": Usage().to_dict()}
                    self.emit("subcall_end", node.id, node.parent_id, **cancelled, seconds=seconds)
            if node.status == "running":
                ended = {"status": "interrupted", "error": why, "seconds": seconds}
                self.emit("call_end", node.id, node.parent_id, **ended)
        self.closed = True

    @contextlib.contextmanager
    def running_child(self, child: Deadline) -> Iterator[None]:
        """Lets the run's end stop a child RLM (`child`, entered in the thread that runs it) while the block runs."""
        with self._child_lock:
            self._children[child] = threading.current_thread().name
        try:
            yield
        finally:
            with self._child_lock:
                self._children.pop(child, None)

    def stop_children(self) -> list[str]:
        """Stop children a block left running; the names of the threads still running one after half a second
        (blocked in C code)."""
        with self._child_lock:
            running = dict(self._children)
        for child in running:
            child.stop()  # a child that has just ended is not touched: its deadline has closed
        deadline = time.monotonic() + 0.5
        while running and time.monotonic() < deadline:
            time.sleep(0.01)
            with self._child_lock:
                running = {c: n for c, n in running.items() if c in self._children}
        return sorted(running.values())

    def close(self) -> None:
        self.closed = True
        if self._writer:
            self._writer.close()

    def result(self, query: str, outcome: Outcome, threads_left: list[str] | None = None) -> RLMResult:
        extra = {"threads_left": threads_left} if threads_left else {}
        return RLMResult(
            answer=outcome.answer,
            status=outcome.status,
            usage=self.budget.snapshot(),
            trace=self.trace,
            seconds=time.perf_counter() - self.started,
            error=None if outcome.error is None else self.redactor.text(outcome.error),
            limit=outcome.limit,
            query=query,
            extra=extra,
        )
