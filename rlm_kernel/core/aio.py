"""One background event loop for all model calls, and interruptible waiting on it.

Model code runs synchronously (in the notebook's main thread or a child's
thread) while its model calls run concurrently on this loop. Callers wait in
short slices so that a kernel interrupt or a cancelled run is seen at once.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import inspect
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from rlm_kernel.core import deadlines

T = TypeVar("T")
WAIT_SLICE_S = 0.05

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


class RunCancelled(BaseException):
    """The run this call belongs to was cancelled (interrupt elsewhere in the tree)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        deadlines.landed()  # sent to a thread as the stop of a cancelled child, it has arrived


def background_loop() -> asyncio.AbstractEventLoop:
    """The process-wide loop, started on first use.

    One long-lived loop, not one per run: litellm caches HTTP clients per loop,
    and a closed loop would poison that cache.
    """
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="rlm-model-calls", daemon=True)
            thread.start()
            atexit.register(_shutdown, loop, thread)
            _loop = loop
        return _loop


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Cancel what is left (litellm keeps a logging task) so exit is quiet."""

    async def cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(timeout=2)
    except Exception:  # exiting anyway
        pass
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=2)


def _close_unstarted(outer: Coroutine[Any, Any, Any], inner: Coroutine[Any, Any, Any]) -> None:
    if inspect.getcoroutinestate(outer) == inspect.CORO_CREATED:
        outer.close()
        inner.close()


class CancelScope:
    """The in-flight calls of one run, so that an interrupt can cancel all of them."""

    DRAIN_S = 0.5

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._lock = threading.Lock()

    def cancel(self, *, wait: bool = True) -> None:
        """Cancel every in-flight call and, with `wait`, wait (briefly) until their cancellation has run.

        Waiting lets each call record its own end in the trace as it unwinds; what is still unwinding
        after the wait is closed by the tree (CallTree.close_open_nodes).
        """
        self.cancelled.set()
        with self._lock:
            tasks = list(self._tasks)
        if not tasks:
            return
        loop = background_loop()

        async def cancel_and_wait() -> None:
            for task in tasks:
                task.cancel()
            if wait:
                await asyncio.wait(tasks, timeout=self.DRAIN_S)

        try:
            asyncio.run_coroutine_threadsafe(cancel_and_wait(), loop).result(timeout=self.DRAIN_S + 0.5)
        except concurrent.futures.TimeoutError:
            pass  # a call that ignores cancellation must not hang the interrupt

    def run(self, coro: Coroutine[Any, Any, T], within: float | None = None) -> T:
        """Run `coro` on the background loop and wait for it, interruptibly; TimeoutError after `within` seconds
        (the call is cancelled: a loop held up by a slow import or a blocking callback can't keep the caller)."""
        if self.cancelled.is_set():
            coro.close()
            raise RunCancelled()
        tracked = self._tracked(coro)
        try:
            loop = background_loop()
            future = asyncio.run_coroutine_threadsafe(tracked, loop)
        except BaseException:  # an interrupt before the call was handed to the loop
            _close_unstarted(tracked, coro)
            raise
        try:
            return self.wait(future, within)
        except BaseException:
            # Cancelled before the loop began it, it never starts: close it, or Python warns it was never awaited.
            # Queued behind the loop's own start-up of the call, so a call that did begin is left to its task.
            loop.call_soon_threadsafe(_close_unstarted, tracked, coro)
            raise

    async def _tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            self._tasks.add(task)
        try:
            return await coro
        finally:
            with self._lock:
                self._tasks.discard(task)

    def wait(self, future: concurrent.futures.Future[T], within: float | None = None) -> T:
        """The future's result; a cancelled run, a deadline of this thread that has passed, or `within` seconds
        (TimeoutError) end the wait."""
        until = None if within is None else time.monotonic() + within
        try:
            while True:
                try:
                    return future.result(timeout=WAIT_SLICE_S)
                except concurrent.futures.TimeoutError:
                    if self.cancelled.is_set():
                        raise RunCancelled() from None
                    deadlines.check()
                    if until is not None and time.monotonic() > until:
                        raise TimeoutError(f"no result within {within:.3g} s") from None
                except concurrent.futures.CancelledError:
                    raise RunCancelled() from None
        except BaseException:
            future.cancel()
            raise
