"""Call slots: how many model calls may be in flight at once, over every tree that shares them."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Protocol, runtime_checkable


@runtime_checkable
class Slots(Protocol):
    """`async with slots:` holds one slot for one model call attempt. `CallSlots` is the one in this process; slots
    shared by processes (a batch across machines) implement the same async context manager."""

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> bool | None: ...


class CallSlots:
    """`size` slots, taken in the order asked. Every model call of a run runs on one event loop (core/aio.py), which
    the semaphore binds to on first use; a batch's questions share that loop, and so one CallSlots."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._semaphore = asyncio.Semaphore(size)

    async def __aenter__(self) -> CallSlots:
        await self._semaphore.acquire()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._semaphore.release()
