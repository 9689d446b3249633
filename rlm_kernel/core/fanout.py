"""The children of one run's `rlm_query_batched` in other processes (`RLM(executor="ray")`): each child RLM is a
`ChildJob`, data only, that the run's executor sends to a worker; the worker runs the child's whole subtree there
(its own children in that worker's threads) against the run's shared budget and call slots, and hands back its
outcome with every event its subtree emitted, which the driver's tree replays into its trace and handlers, so the
trace reads as in process."""

from __future__ import annotations

import concurrent.futures
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
from rlm_kernel.core.trace import Event
from rlm_kernel.core.tree import CallTree, Outcome


@runtime_checkable
class SharedByProcesses(Protocol):
    """An executor of other processes that gives what those processes share: a budget and call slots they all
    reach (a batch's questions, or a run's children, on them charge and take these)."""

    def shared_budget(self, limits: Limits) -> Budget: ...

    def shared_slots(self, size: int) -> Slots: ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]: ...


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

    def __call__(self) -> ChildDone:
        events: list[Event] = []
        new_repl = repl_factory(self.config)
        tree = CallTree(
            self.config,
            Models.connect(self.config),
            CancelScope(),
            None,
            budget=self.budget,
            slots=self.slots,
            on_event=[events.append],
            new_repl=new_repl,
            id_space=f"{self.child_id}.",  # its descendants' ids cannot collide with the driver's
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


def run_elsewhere(parent: Node, queued: list[Queued | str], executor: SharedByProcesses) -> list[Any]:
    """Every queued child on `executor` at once (it bounds how many run), each child's events replayed into the
    parent's tree before its sub-call ends; a block that stops waiting cancels the children still running."""
    tree = parent.tree
    started = time.perf_counter()
    futures: list[concurrent.futures.Future[Any] | str] = []
    for child in queued:
        if isinstance(child, str):
            futures.append(child)
            continue
        context, query, model, child_id, _ = child
        job = ChildJob(
            tree.config, context, query, model, child_id, parent.id, parent.depth + 1, tree.budget, tree.slots
        )
        futures.append(executor.submit(job))
    replies = []
    try:
        for child, future in zip(queued, futures):
            if isinstance(child, str) or isinstance(future, str):
                replies.append(future)
                continue
            try:
                done = tree.scope.wait(future)
            except concurrent.futures.CancelledError:
                done = None
            except Exception as exc:  # the job itself failed on the worker
                done = f"{type(exc).__name__}: {exc}"
            for event in done.events if isinstance(done, ChildDone) else []:  # the child's subtree, as it ran there
                tree.replay(event)
            replies.append(parent.end_child(child[3], child[4], _outcome(done), started))
    finally:
        for future in futures:
            if not isinstance(future, str):
                future.cancel()  # the block stopped waiting (a timeout, an interrupt): its children stop too
    return replies


def _outcome(done: object) -> Outcome:
    if isinstance(done, ChildDone):
        return done.outcome
    error = getattr(done, "error", None) or (done if isinstance(done, str) else "cancelled")
    return Outcome("error", None, str(error))  # an executor's own failure result (a dead worker, a cancel)
