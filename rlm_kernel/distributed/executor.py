"""`RayExecutor`: a batch's questions as Ray tasks, with the budget, slots and event stream they share.

One watcher thread on the driver submits questions (at most the batch's concurrency running at once), waits on
their results with `ray.wait`, drains the workers' events, and handles faults: a task whose worker or node died is
sent again (up to `max_retries` times) after its slots and open reservations are released, else it ends failed
alone. Ray's own task retries are off, so that every attempt is one the driver knows of and can account for.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import itertools
import os
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import ray
from ray.exceptions import RayTaskError, TaskCancelledError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from rlm_kernel.core.batch import Question, failed
from rlm_kernel.core.errors import ConfigError, RLMError
from rlm_kernel.core.ledger import Limits
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import Event, EventHandler
from rlm_kernel.distributed.events import EventChannel, Progress
from rlm_kernel.distributed.shared import RayBudget, RaySlots
from rlm_kernel.distributed.workers import NodeHost, answer_task, call_task, child_task

HOST_THREADS = 32  # a node host's threads when no batch bounds how many of its questions run at once
FORCE_AFTER_S = 2.0  # a cancelled task that has not stopped by then has its worker killed
WATCH_SLICE_S = 0.05


@dataclasses.dataclass
class _Entry:
    future: concurrent.futures.Future[Any]
    submit: Callable[[_Entry], Any]  # starts one attempt of this entry; returns its ObjectRef
    query: str | None  # a question's (None: any other function)
    tries_left: int
    index: int | None = None  # a question's (from 0) or a fan-out child's (from -1 down), as its events name it
    ref: Any = None
    host: Any = None  # the node host running this attempt (context_copies="per_node")
    cancelled_at: float | None = None


class RayExecutor(concurrent.futures.Executor):
    """Runs a batch's questions on the Ray cluster that `address` (else `ray.init()`'s own rules: RAY_ADDRESS, a
    running local cluster) names, starting a local one only when none is found.

    `num_cpus` / `resources`: what each question asks of a node; `max_retries`: how often a question whose worker or
    node died is sent again; `context_copies`: "per_question" (each question is a Ray task of its own, in a process
    of its own, so model-written code runs in parallel; each running question reads its own copy of its context) or
    "per_node" (the questions sent to a node run on threads of one process there, which reads a context they share
    once: one copy a node, but that node's questions share one GIL, and `num_cpus` / `resources` do not apply);
    `task_options`: any other of Ray's task options (e.g. `scheduling_strategy`); `runtime_env`, `init`: passed to
    `ray.init` when this executor connects;
    `on_event(index, event)`: called on the driver for each event a question's run emits, as it arrives (`index`
    counts the questions this executor was given, from 0: a batch's own order when the executor is new); a batch
    that is watched (its live view) gets its own questions' events through `submit_question`;
    `progress`: a callable given the `Progress` about once a second (e.g. `Progress.print_line`)."""

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: float = 1,
        resources: dict[str, float] | None = None,
        max_retries: int = 1,
        context_copies: Literal["per_question", "per_node"] = "per_question",
        task_options: dict[str, Any] | None = None,
        runtime_env: dict[str, Any] | None = None,
        init: dict[str, Any] | None = None,
        on_event: Callable[[int, Event], None] | None = None,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.address = address
        self.task_options: dict[str, Any] = {"num_cpus": num_cpus, "resources": resources or {}, **(task_options or {})}
        self.max_retries = max_retries
        if context_copies not in ("per_question", "per_node"):
            raise ConfigError(f"context_copies must be 'per_question' or 'per_node', not {context_copies!r}")
        self.context_copies = context_copies
        self._hosts: dict[str, Any] = {}  # a node's id -> its host (per_node)
        self.init_options = {"runtime_env": runtime_env, **(init or {})}
        self.on_event = on_event
        self.show_progress = progress
        self.progress = Progress()
        self.max_running: int | None = None
        self.contexts: dict[int, tuple[object, Any]] = {}  # id(context) -> (context, its ObjectRef)
        self._routes: dict[int, Callable[[Event | None], None]] = {}  # a question's index -> its batch's watcher
        self._child_indexes = itertools.count(-1, -1)  # a fan-out child's events: apart from the questions' counts
        self._pending: list[_Entry] = []
        self._running: dict[Any, _Entry] = {}
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._hub: Any = None  # where its event channel goes (None: this driver's hub)
        self._events: EventChannel | None = None
        self._budget: RayBudget | None = None
        self._slots: RaySlots | None = None

    # -- connecting, and what a batch's processes share (core/batch.py: ClusterExecutor) ----------------------
    def connect(self) -> EventChannel:
        """Joins (or starts) the cluster once; returns this executor's event channel."""
        if not ray.is_initialized():
            options = {k: v for k, v in self.init_options.items() if v is not None}
            ray.init(address=self.address or os.environ.get("RAY_ADDRESS"), log_to_driver=False, **options)
        if self._events is None:
            self._events = EventChannel.create(self._hub)
        return self._events

    def shared_budget(self, limits: Limits) -> RayBudget:
        self.connect()
        self._budget = RayBudget.create(limits)
        return self._budget

    def shared_slots(self, size: int) -> RaySlots:
        """The batch's call slots; its `concurrency` also bounds how many of its questions run at once."""
        self.connect()
        self.max_running = size
        self._slots = RaySlots.create(size)
        return self._slots

    def check_sendable(self, questions: list[Question]) -> None:
        """Every question's config and context can reach a worker; each distinct context goes to the object store
        once (one copy per node that reads it), however many questions share it."""
        self.connect()
        for index, question in enumerate(questions):
            try:
                pickle.dumps(question.config)
            except (ConfigError, pickle.PicklingError, TypeError, AttributeError) as exc:
                raise ConfigError(f"question {index} cannot be sent to a Ray worker: {exc}") from None
            if id(question.context) in self.contexts:
                continue
            try:
                ref = ray.put(question.context)
            except Exception as exc:  # whatever cloudpickle refuses
                raise ConfigError(
                    f"question {index}'s context cannot be sent to a Ray worker ({type(exc).__name__}: {exc})"
                ) from None
            self.contexts[id(question.context)] = (question.context, ref)
        self.progress.queued += len(questions)

    def for_a_worker(self) -> Callable[[], RayExecutor]:
        """How a worker running a fan-out's child makes the executor of that child's own children (core/fanout.py:
        RunsOnWorkers): as this one's task options, its events on this driver's hub (they reach this driver through
        the child's own stream)."""
        return functools.partial(_on_a_worker, self.task_options, self.max_retries, self.connect().hub)

    # -- concurrent.futures.Executor ----------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        return self._submit(fn, args, kwargs, None)

    def submit_question(
        self, question: Question, on_event: Callable[[Event | None], None]
    ) -> concurrent.futures.Future[RLMResult]:
        """Run `question` (core/batch.py: StreamsEvents); `on_event` gets its events on the driver as they arrive
        (`None`: it started on a worker, again if it is sent again)."""
        return self._submit(question, (), {}, on_event)

    def submit_child(
        self, job: Callable[[EventHandler], Any], on_event: Callable[[Event | None], None]
    ) -> concurrent.futures.Future[Any]:
        """Run a fan-out's child (core/fanout.py: StreamsChildren); `on_event` gets its subtree's events on the
        driver as they arrive, until its result is set. Not sent again when its worker dies: it fails alone."""
        self.connect()
        future: concurrent.futures.Future[Any] = _RayFuture(self)
        index = next(self._child_indexes)
        self._routes[index] = on_event  # before the task can start: none of its events goes unrouted
        options = self.task_options
        entry = _Entry(future, lambda _: child_task.options(**options).remote(job, index, self._events), None, 0, index)
        self._add(future, entry)
        return future

    def _submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_event: Callable[[Event | None], None] | None,
    ) -> concurrent.futures.Future[Any]:
        self.connect()
        future: concurrent.futures.Future[Any] = _RayFuture(self)
        if isinstance(fn, Question):
            index, submitter = self._question_submitter(fn)
            if on_event is not None:  # before the task can start: none of its events goes unrouted
                self._routes[index] = on_event
            entry = _Entry(future, submitter, fn.query, self.max_retries, index)
        else:
            options = self.task_options
            entry = _Entry(
                future, lambda _: call_task.options(**options).remote(fn, args, kwargs), None, self.max_retries
            )
        self._add(future, entry)
        return future

    def _add(self, future: concurrent.futures.Future[Any], entry: _Entry) -> None:
        future.entry = entry  # type: ignore[attr-defined]
        with self._lock:
            self._pending.append(entry)
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch, name="rlm-ray-watch", daemon=True)
                self._watcher.start()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if cancel_futures:
            with self._lock:
                entries = [*self._pending, *self._running.values()]
            for entry in entries:
                entry.future.cancel()
        if wait and self._watcher is not None:
            self._watcher.join()

    def _question_submitter(self, question: Question) -> tuple[int, Callable[[_Entry], Any]]:
        kept = self.contexts.get(id(question.context))
        context = kept[1] if kept is not None else ray.put(question.context)
        index = self.progress.submitted
        self.progress.submitted += 1
        bare = dataclasses.replace(question, context=None)  # the context travels once, as its ObjectRef
        if self.context_copies == "per_node":
            return index, lambda entry: self._on_host(entry, bare, context)
        options = self.task_options
        return index, lambda _: answer_task.options(**options).remote(bare, [context], index, self._events)

    def _on_host(self, entry: _Entry, question: Question, context: Any) -> Any:
        entry.host = self._host()
        return entry.host.answer.remote(question, [context], entry.index, self._events)

    def _host(self) -> Any:
        """The host, on a node alive now, with the fewest of this executor's questions running (one started on a
        node that has none yet)."""
        alive = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
        for node in alive:
            if node not in self._hosts:
                self._hosts[node] = NodeHost.options(  # type: ignore[attr-defined]
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                    max_concurrency=self.max_running or HOST_THREADS,
                ).remote()
        if not alive:
            raise RLMError("no Ray node with CPUs is alive")
        running = [entry.host for entry in self._running.values()]
        return min((self._hosts[node] for node in alive), key=running.count)

    def cancel(self, entry: _Entry) -> None:
        with self._lock:
            if entry in self._pending:
                self._pending.remove(entry)
                return
            if entry.ref is not None and entry.cancelled_at is None:
                entry.cancelled_at = time.monotonic()
                if entry.host is not None:  # a question on a host's thread: stopped as an in-process batch's are
                    entry.host.stop.remote(entry.index)
                else:
                    ray.cancel(entry.ref, force=False)  # a KeyboardInterrupt in the worker: it ends as interrupted

    # -- the watcher ------------------------------------------------------------------------------------------
    def _watch(self) -> None:
        try:
            self._watch_until_idle()
        except BaseException as exc:  # the watcher itself failed: every question still open ends with that error
            with self._lock:
                entries, self._pending, self._running = [*self._pending, *self._running.values()], [], {}
            for entry in entries:
                _set(entry.future, error=exc)
            raise

    def _watch_until_idle(self) -> None:
        last_shown = 0.0
        while True:
            with self._lock:
                while self._pending and (self.max_running is None or len(self._running) < self.max_running):
                    entry = self._pending.pop(0)
                    try:
                        entry.ref = entry.submit(entry)
                    except Exception as exc:  # Ray refused the task: this question fails alone, with the reason
                        self._refused(entry, exc)
                        continue
                    self._running[entry.ref] = entry
                refs = list(self._running)
                if not refs:
                    self._drain()
                    for host in self._hosts.values():  # nothing runs: what the hosts read is not needed now
                        host.release.remote()
                    return
            done, rest = ray.wait(refs, num_returns=1, timeout=WATCH_SLICE_S, fetch_local=False)
            if done and rest:  # and whatever else finished meanwhile
                done += ray.wait(rest, num_returns=len(rest), timeout=0, fetch_local=False)[0]
            self._drain()  # a question's last events before its result, where they arrived in time
            for ref in done:
                entry = self._running.pop(ref)
                try:
                    self._finish(entry)
                except Exception as exc:  # handling the outcome failed (e.g. the budget actor is gone): this one fails
                    self._refused(entry, exc)
            self._force_stuck()
            self._drain()
            if self.show_progress is not None and time.monotonic() - last_shown >= 1.0:
                last_shown = time.monotonic()
                self.show_progress(self.progress)

    def _finish(self, entry: _Entry) -> None:
        if entry.query is None and entry.index is not None:
            self._routes.pop(entry.index, None)  # a child's: what did not arrive by now comes back in its result
        try:
            value = ray.get(entry.ref)
        except TaskCancelledError:
            value = failed(entry.query or "", "cancelled", "interrupted")
        except RayTaskError as exc:  # the code raised: it is not the worker that failed
            if entry.query is None:
                _set(entry.future, error=exc.as_instanceof_cause())
                return
            value = failed(entry.query, f"{type(exc.cause).__name__}: {exc.cause}")
        except Exception as exc:  # the worker or its node died, or the result was lost with it
            owner = entry.ref.task_id().hex()
            for shared in (self._budget, self._slots):
                if shared is not None:
                    shared.abandon(owner)
            self._forget(entry.host)
            if entry.tries_left > 0 and entry.cancelled_at is None:
                entry.tries_left -= 1
                self.progress.retried += 1
                with self._lock:
                    entry.ref = None
                    self._pending.insert(0, entry)
                return
            value = failed(entry.query or "", f"the Ray worker running it died ({type(exc).__name__})")
        if isinstance(value, RLMResult) and entry.query is not None:
            self._ended(entry, value)
        _set(entry.future, value)

    def _refused(self, entry: _Entry, exc: Exception) -> None:
        if entry.index is not None:
            self._routes.pop(entry.index, None)
        if entry.query is None:
            _set(entry.future, error=exc)
            return
        result = failed(entry.query, f"Ray failed the task: {type(exc).__name__}: {exc}")
        self._ended(entry, result)
        _set(entry.future, result)

    def _ended(self, entry: _Entry, result: RLMResult) -> None:
        """A question has its result: counted, and its events, if any still come, go to no watcher."""
        self.progress.finished(result, entry.index)
        if entry.index is not None:
            self._routes.pop(entry.index, None)

    def _force_stuck(self) -> None:
        now = time.monotonic()
        for entry in list(self._running.values()):
            if entry.cancelled_at is not None and now - entry.cancelled_at > FORCE_AFTER_S:
                entry.cancelled_at = float("inf")  # once
                if entry.host is None:
                    ray.cancel(entry.ref, force=True)
                else:  # a thread cannot be killed: its host goes, and its other questions are sent again
                    self._forget(entry.host)
                    ray.kill(entry.host)

    def _forget(self, host: Any) -> None:
        """A host that died or was killed: the next question for its node starts a new one there."""
        for node, known in list(self._hosts.items()):
            if known is host:
                del self._hosts[node]

    def _drain(self) -> None:
        if self._events is None:
            return
        for index, event in self._events.drain():
            if index >= 0:  # a question's (a fan-out child's goes to its run only)
                self.progress.saw(index, event)
                if self.on_event is not None and event is not None:
                    self.on_event(index, event)
            route = self._routes.get(index)
            if route is not None:
                route(event)


def _on_a_worker(task_options: dict[str, Any], max_retries: int, hub: Any) -> RayExecutor:
    executor = RayExecutor(task_options=task_options, max_retries=max_retries)
    executor._hub = hub
    return executor


class _RayFuture(concurrent.futures.Future[Any]):
    """Cancelling it cancels the Ray task (not only a future not yet started)."""

    def __init__(self, executor: RayExecutor) -> None:
        super().__init__()
        self.executor = executor
        self.entry: _Entry | None = None

    def cancel(self) -> bool:
        if self.entry is not None:
            self.executor.cancel(self.entry)
        return super().cancel()


def _set(future: concurrent.futures.Future[Any], value: Any = None, error: BaseException | None = None) -> None:
    if future.done() or not future.set_running_or_notify_cancel():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
