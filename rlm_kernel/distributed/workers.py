"""What runs on the Ray workers for `RayExecutor` (executor.py): a batch's question as a task of its own or on a
node's host, a fan-out's child, any other function; and the contexts a worker process reads from the object store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import ray

from rlm_kernel.core.aio import RunCancelled
from rlm_kernel.core.batch import Question, failed
from rlm_kernel.core.clients import Models
from rlm_kernel.core.deadlines import Deadline
from rlm_kernel.core.errors import RLMError
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.run import Local
from rlm_kernel.core.trace import EventHandler
from rlm_kernel.distributed.events import EventChannel, EventSender


@ray.remote(max_retries=0)
def answer_task(question: Question, context: list[Any], index: int, events: EventChannel | None) -> RLMResult:
    """One question on a worker, as a Ray task of its own. `context` is `[ObjectRef]` (in a list, so that Ray hands
    over the reference, not a copy)."""
    return answer_question(question, context[0], index, events, _tasks_contexts())


def answer_question(
    question: Question, ref: Any, index: int, events: EventChannel | None, contexts: ContextsRead
) -> RLMResult:
    """A question with its own model clients (keys from this worker's environment), its events to the batch's
    channel, and its context read from the object store through `contexts`."""
    with _sending(events, index) as sender, contexts.lease(ref) as context:
        question = dataclasses.replace(question, context=context)
        try:
            local = Local(Models.connect(question.config), on_event=[sender])
        except RLMError as exc:
            return failed(question.query, str(exc))
        return question.run(local)


@contextlib.contextmanager
def _sending(events: EventChannel | None, index: int) -> Iterator[EventSender]:
    """An event handler that sends to `events` under `index`: it says the work started, and flushes at its end."""
    sender = EventSender(events, index)
    sender.started()
    try:
        yield sender
    finally:
        sender.flush()


class ContextsRead:
    """The contexts this process's questions read from the object store, each read once while any question here
    uses it: a string or dict is a full copy in its reader's memory, so a process holds one copy of a context
    however many of its questions share it. Let go when the last one ends, or (`until_released`) on `release()`."""

    def __init__(self, until_released: bool = False) -> None:
        self._held: dict[str, list[Any]] = {}  # object id -> [value, questions using it]
        self._until_released = until_released
        self._lock = threading.Lock()

    def release(self) -> None:
        """Let go of every context no question here uses now."""
        with self._lock:
            for key in [key for key, (_, users) in self._held.items() if users == 0]:
                del self._held[key]

    @contextlib.contextmanager
    def lease(self, ref: Any) -> Iterator[object]:
        key = ref.hex()
        with self._lock:  # a second question of the same context waits for the first one's read
            held = self._held.get(key)
            if held is None:
                held = self._held[key] = [ray.get(ref), 0]
            held[1] += 1
        try:
            yield held[0]
        finally:
            with self._lock:
                held[1] -= 1
                if held[1] == 0 and not self._until_released:
                    del self._held[key]


_contexts_read = ContextsRead()


def _tasks_contexts() -> ContextsRead:
    """This process's reader, for its Ray tasks (a remote function that named it would send it by value)."""
    return _contexts_read


@ray.remote(num_cpus=0, max_restarts=0)
class NodeHost:
    """One process on a node that runs the questions sent to it on threads (`context_copies="per_node"`): a context
    they share is read once on the node, and kept until the executor, its batch done, calls `release()`. A question
    stops on `stop(index)`, as an in-process batch's do."""

    def __init__(self) -> None:
        self._stops: dict[int, Deadline] = {}
        self._contexts = ContextsRead(until_released=True)

    def answer(self, question: Question, context: list[Any], index: int, events: EventChannel | None) -> RLMResult:
        with Deadline(math.inf, raises=RunCancelled) as stoppable:
            self._stops[index] = stoppable
            try:
                return answer_question(question, context[0], index, events, self._contexts)
            finally:
                del self._stops[index]

    def release(self) -> None:
        self._contexts.release()

    def stop(self, index: int) -> None:
        stoppable = self._stops.get(index)
        if stoppable is not None:
            stoppable.stop()


@ray.remote(max_retries=0)
def call_task(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


@ray.remote(max_retries=0)
def child_task(job: Callable[[EventHandler], Any], index: int, events: EventChannel | None) -> Any:
    """A fan-out's child on a worker (core/fanout.py: ChildJob): its subtree's events go to the run's channel as
    they happen, as a question's do, under the child's own (negative) index."""
    with _sending(events, index) as sender:
        return job(sender)
