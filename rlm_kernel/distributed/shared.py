"""What every worker of a batch reaches: one budget and one set of call slots, each a Ray actor.

A worker's calls reserve on the budget actor before they are sent and take a slot from the slots actor around each
attempt, exactly as a question in one process does with its Ledger and CallSlots; the proxies below are the
`Budget` and `Slots` the engine sees. Each reservation and slot is held under the Ray task that took it, so when a
worker dies the driver hands its slots back and settles its open reservations at their reserved worst case (the
calls it sent stay counted).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import ray

from rlm_kernel.core.errors import BudgetExhausted
from rlm_kernel.core.ledger import Ledger, Limits, Reservation, Usage


def on_this_node() -> dict[str, Any]:
    """Actor options that keep a batch's shared actors on the driver's node: a worker node may go away mid-batch,
    and the budget, slots and events must outlive it (they die with the driver's node, as the batch does)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}


def current_owner() -> str:
    """The Ray task this code runs in (the driver: 'driver'); the key a dead worker's holdings are released by."""
    try:
        task = ray.get_runtime_context().get_task_id()
    except Exception:  # not connected: a budget used outside Ray
        task = None
    return task or "driver"


@ray.remote(num_cpus=0, max_restarts=0)
class BudgetActor:
    """A Ledger that lives in one actor; its methods run one at a time, in the order each caller sent them."""

    def __init__(self, limits: Limits) -> None:
        self.ledger = Ledger(limits)
        self.open: dict[int, tuple[str, Reservation]] = {}
        self.ids = itertools.count()

    def reserve(
        self, owner: str, input_tokens: int, max_output: int, input_rate: float, output_rate: float
    ) -> tuple[int, Reservation] | tuple[str, str] | None:
        try:
            reservation = self.ledger.reserve(input_tokens, max_output, input_rate, output_rate)
        except BudgetExhausted as refused:
            return refused.limit, str(refused)
        if reservation is None:
            return None
        rid = next(self.ids)
        self.open[rid] = (owner, reservation)
        return rid, reservation

    def settle(self, rid: int, actual: Usage) -> None:
        owner_and_reservation = self.open.pop(rid, None)
        if owner_and_reservation is not None:
            self.ledger.settle(owner_and_reservation[1], actual)

    def release(self, rid: int) -> None:
        owner_and_reservation = self.open.pop(rid, None)
        if owner_and_reservation is not None:
            self.ledger.release(owner_and_reservation[1])

    def abandon(self, owner: str) -> int:
        """A dead worker's open reservations count at their worst case: its requests may have reached the server."""
        gone = [rid for rid, (who, _) in self.open.items() if who == owner]
        for rid in gone:
            reservation = self.open.pop(rid)[1]
            self.ledger.settle(reservation, Usage(input_tokens=reservation.tokens, cost_usd=reservation.cost_usd))
        return len(gone)

    def record_cached(self) -> None:
        self.ledger.record_cached()

    def seconds_left(self) -> float | None:
        return self.ledger.seconds_left()

    def check_time(self) -> tuple[str, str] | None:
        """The refusal when the time budget is spent (returned, as reserve's: raised by the proxy), else None."""
        try:
            self.ledger.check_time()
        except BudgetExhausted as refused:
            return refused.limit, str(refused)
        return None

    def snapshot(self) -> Usage:
        return self.ledger.snapshot()


@dataclass
class _Held(Reservation):
    rid: int = -1


class RayBudget:
    """The `Budget` a worker's calls are charged to: each method a call to one BudgetActor (pickles as its handle)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    @classmethod
    def create(cls, limits: Limits) -> RayBudget:
        return cls(BudgetActor.options(**on_this_node()).remote(limits))  # type: ignore[attr-defined]

    def reserve(
        self, input_tokens: int, max_output: int, input_rate: float = 0.0, output_rate: float = 0.0
    ) -> Reservation | None:
        answer = ray.get(self.actor.reserve.remote(current_owner(), input_tokens, max_output, input_rate, output_rate))
        if answer is None:
            return None
        first, second = answer
        if isinstance(first, str):
            raise BudgetExhausted(first, str(second))
        return _Held(second.tokens, second.cost_usd, second.output_cap, rid=first)

    def settle(self, reservation: Reservation, actual: Usage) -> None:
        if not reservation.settled:
            reservation.settled = True
            ray.get(self.actor.settle.remote(_rid(reservation), actual))

    def release(self, reservation: Reservation) -> None:
        if not reservation.settled:
            reservation.settled = True
            ray.get(self.actor.release.remote(_rid(reservation)))

    def abandon(self, owner: str) -> None:
        ray.get(self.actor.abandon.remote(owner))

    def record_cached(self) -> None:
        ray.get(self.actor.record_cached.remote())

    def seconds_left(self) -> float | None:
        left: float | None = ray.get(self.actor.seconds_left.remote())
        return left

    def check_time(self) -> None:
        refused = ray.get(self.actor.check_time.remote())
        if refused is not None:
            raise BudgetExhausted(*refused)

    def snapshot(self) -> Usage:
        used: Usage = ray.get(self.actor.snapshot.remote())
        return used


def _rid(reservation: Reservation) -> int:
    if not isinstance(reservation, _Held):
        raise TypeError("a reservation of another budget")
    return reservation.rid


@ray.remote(num_cpus=0, max_restarts=0)
class SlotsActor:
    """`size` slots for the model calls of every worker together (an async actor: waiting callers hold no thread)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.held: dict[str, str] = {}  # token -> owner
        self.given_up: set[str] = set()  # tokens whose caller stopped waiting (it may ask before its acquire lands)
        self.peak = 0
        self.changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self.changed is None:
            self.changed = asyncio.Condition()
        return self.changed

    async def acquire(self, token: str, owner: str) -> bool:
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: len(self.held) < self.size or token in self.given_up)
            if token in self.given_up:
                self.given_up.discard(token)
                return False
            self.held[token] = owner
            self.peak = max(self.peak, len(self.held))
            return True

    async def release(self, token: str) -> None:
        changed = self._condition()
        async with changed:
            if self.held.pop(token, None) is None:
                self.given_up.add(token)
            changed.notify_all()

    async def abandon(self, owner: str) -> int:
        changed = self._condition()
        async with changed:
            gone = [token for token, who in self.held.items() if who == owner]
            for token in gone:
                del self.held[token]
            changed.notify_all()
            return len(gone)

    async def counts(self) -> tuple[int, int]:
        """Slots held now, and the most ever held at once."""
        return len(self.held), self.peak


_token: contextvars.ContextVar[str | None] = contextvars.ContextVar("rlm_ray_slot", default=None)


class RaySlots:
    """The `Slots` a worker's calls take: one SlotsActor's, held per call attempt (each asyncio task its own token)."""

    def __init__(self, actor: Any, size: int) -> None:
        self.actor, self.size = actor, size

    @classmethod
    def create(cls, size: int) -> RaySlots:
        actor = SlotsActor.options(max_concurrency=10_000, **on_this_node()).remote(size)  # type: ignore[attr-defined]
        return cls(actor, size)

    async def __aenter__(self) -> RaySlots:
        token = uuid.uuid4().hex
        try:
            await self.actor.acquire.remote(token, current_owner())
        except BaseException:  # cancelled while waiting: the slot, if it was given, goes back
            self.actor.release.remote(token)
            raise
        _token.set(token)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        token = _token.get()
        if token is not None:
            _token.set(None)
            await self.actor.release.remote(token)

    def abandon(self, owner: str) -> None:
        ray.get(self.actor.abandon.remote(owner))

    def counts(self) -> tuple[int, int]:
        held: tuple[int, int] = ray.get(self.actor.counts.remote())
        return held
