"""The children of one run's `rlm_query_batched` in other processes (`RLM(executor="ray")`): each child RLM is a
`ChildJob`, data only, that the run's executor sends to a worker; the worker runs the child there (its own
children on the same executor when it `RunsOnWorkers`, else in that worker's threads) against the run's shared
budget and call slots, and hands back its outcome with every event its subtree emitted. An executor that
`StreamsChildren` also sends those events back as they happen, and the driver's tree passes each to its trace and
handlers as it arrives; at the child's end, the events of its list that did not arrive (all of them, from an
executor that does not stream) are passed on, so the trace holds the child's subtree once and reads as in
process."""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from rlm_kernel.core.aio import CancelScope
from rlm_kernel.core.clients import Models
from rlm_kernel.core.config import RunConfig
from rlm_kernel.core.ledger import Budget, Limits
from rlm_kernel.core.node import Node
from rlm_kernel.core.repl import repl_factory
from rlm_kernel.core.slots import Slots
from rlm_kernel.core.trace import Event, EventHandler
from rlm_kernel.core.tree import CallTree, Outcome


@runtime_checkable
class SharedByProcesses(Protocol):
    """An executor of other processes that gives what those processes share: a budget and call slots they all
    reach (a batch's questions, or a run's children, on them charge and take these)."""

    def shared_budget(self, limits: Limits) -> Budget: ...

    def shared_slots(self, size: int) -> Slots: ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]: ...


@runtime_checkable
class StreamsChildren(Protocol):
    """An executor of other processes that sends a child's events back while the child runs."""

    def submit_child(
        self, job: Callable[[EventHandler], Any], on_event: Callable[[Event | None], None]
    ) -> concurrent.futures.Future[Any]:
        """Run `job(handler)` elsewhere: every event given to `handler` there reaches `on_event` here, in the order
        it was given, until the job's result is set (`None`: it started). The job is not sent again when its
        worker dies: a child's events already passed on cannot be taken back."""
        ...


@runtime_checkable
class RunsOnWorkers(Protocol):
    """An executor of other processes whose workers can send work of their own to it: a child's own fan-outs."""

    def for_a_worker(self) -> Callable[[], SharedByProcesses]:
        """A picklable maker of an executor that a worker running a child uses for that child's own children
        (sharing what this one shares: the run's budget, slots and event stream)."""
        ...


Queued = tuple[object, str, str, str, str]  # a child announced by Node._queue_child: context, query, model, ids


@dataclass(frozen=True)
class ChildDone:
    outcome: Outcome
    events: list[Event]


@dataclass(frozen=True)
class ChildJob:
    """One child RLM as another process runs it (pickles: the budget and slots must be ones other processes reach)."""

    config: RunConfig
    context: object
    query: str
    model: str
    child_id: str
    parent_id: str
    depth: int
    budget: Budget
    slots: Slots
    fan_out: Callable[[], SharedByProcesses] | None = None  # where its own children run (None: its worker's threads)

    def __call__(self, on_event: EventHandler | None = None) -> ChildDone:
        """Run the child here; `on_event` gets each of its subtree's events as it happens (they also come back,
        all of them, in its `ChildDone`)."""
        events: list[Event] = []
        new_repl = repl_factory(self.config)
        cluster = self.fan_out() if self.fan_out is not None else None
        tree = CallTree(
            self.config,
            Models.connect(self.config),
            CancelScope(),
            None,
            budget=self.budget,
            slots=self.slots,
            on_event=[events.append, *([on_event] if on_event is not None else [])],
            new_repl=new_repl,
            id_space=f"{self.child_id}.",  # its descendants' ids cannot collide with the driver's
            fan_out=None if cluster is None else functools.partial(run_elsewhere, executor=cluster),
        )
        repl = new_repl()
        try:
            child = Node(
                tree,
                self.context,
                self.query,
                depth=self.depth,
                parent_id=self.parent_id,
                repl=repl,
                model=self.model,
                node_id=self.child_id,
            )
            outcome = child.run()
        finally:
            repl.close()
            tree.stop_children()
            tree.close()
        return ChildDone(outcome, events)


class _ChildEvents:
    """A child's events on the driver: each one that arrives while it runs goes to the tree at once; at its end,
    those of its whole list that did not arrive. A child's events arrive in the order it emitted them (one
    sender's bundles reach the hub in order, and the executor stops routing them before it sets the result), so
    the ones that arrived are the first `passed` of its list: none is passed twice, whatever else arrives when."""

    def __init__(self, tree: CallTree) -> None:
        self.tree = tree
        self.passed = 0
        self.ended = False
        self._lock = threading.Lock()

    def __call__(self, event: Event | None) -> None:
        with self._lock:
            if event is None or self.ended:  # it started; or it has ended, and its own list is the rest
                return
            self.passed += 1
            self.tree.replay(event)

    def end(self, events: list[Event]) -> None:
        with self._lock:
            self.ended = True
            for event in events[self.passed :]:
                self.tree.replay(event)


def run_elsewhere(parent: Node, queued: list[Queued | str], executor: SharedByProcesses) -> list[Any]:
    """Every queued child on `executor` at once (it bounds how many run), each child's events passed to the
    parent's tree as they arrive (or at its end) and before its sub-call ends; a block that stops waiting cancels
    the children still running, and the events that reached the tree from them stay (their partial subtrees)."""
    tree = parent.tree
    started = time.perf_counter()
    futures: list[concurrent.futures.Future[Any] | str] = []
    streams: list[_ChildEvents | None] = []
    spread = executor.for_a_worker() if isinstance(executor, RunsOnWorkers) else None  # the children's own fan-outs
    for child in queued:
        if isinstance(child, str):
            futures.append(child)
            streams.append(None)
            continue
        context, query, model, child_id, _ = child
        job = ChildJob(
            tree.config, context, query, model, child_id, parent.id, parent.depth + 1, tree.budget, tree.slots, spread
        )
        stream = _ChildEvents(tree)
        streams.append(stream)
        if isinstance(executor, StreamsChildren):
            futures.append(executor.submit_child(job, stream))
        else:
            futures.append(executor.submit(job))
    replies = []
    try:
        for child, future, events in zip(queued, futures, streams):
            if isinstance(child, str) or isinstance(future, str) or events is None:
                replies.append(future)
                continue
            try:
                done = tree.scope.wait(future)
            except concurrent.futures.CancelledError:
                done = None
            except Exception as exc:  # the job itself failed on the worker
                done = f"{type(exc).__name__}: {exc}"
            events.end(done.events if isinstance(done, ChildDone) else [])  # the rest of its subtree, as it ran
            replies.append(parent.end_child(child[3], child[4], _outcome(done), started))
    finally:
        for future in futures:
            if not isinstance(future, str):
                future.cancel()  # the block stopped waiting (a timeout, an interrupt): its children stop too
        for left in streams:
            if left is not None and not left.ended:  # what a cancelled child passed on stays; no more comes
                left.end([])
    return replies


def _outcome(done: object) -> Outcome:
    if isinstance(done, ChildDone):
        return done.outcome
    error = getattr(done, "error", None) or (done if isinstance(done, str) else "cancelled")
    return Outcome("error", None, str(error))  # an executor's own failure result (a dead worker, a cancel)
