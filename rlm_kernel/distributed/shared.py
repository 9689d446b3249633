"""What every worker of a batch reaches: one budget, one set of call slots and one event stream, kept by one Ray
actor (the `BatchHub`) that a driver starts once per Ray session and every batch of that driver shares.

Starting an actor starts a worker process (seconds on a busy machine), so a batch does not start its own: it
opens a budget, a slot pool and an event channel on the driver's hub under keys of its own, and they are dropped
from the hub when the driver lets go of them (their proxies are collected), so nothing outlives the batch but the
one idle hub, which ends with the driver's Ray session.

A worker's calls reserve on the hub before they are sent and take a slot around each attempt, exactly as a
question in one process does with its Ledger and CallSlots; the proxies below are the `Budget` and `Slots` the
engine sees. Each reservation and slot is held under the Ray task that took it, so when a worker dies the driver
hands its slots back and settles its open reservations at their reserved worst case (the calls it sent stay
counted).
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import ray

from rlm_kernel.core.errors import BudgetExhausted
from rlm_kernel.core.ledger import Ledger, Limits, Reservation, Usage
from rlm_kernel.core.trace import Event

Delivery = tuple[int, Event | None]  # (question index, event); None: the question started


def on_this_node() -> dict[str, Any]:
    """Actor options that keep the hub on the driver's node: a worker node may go away mid-batch, and the budget,
    slots and events must outlive it (they die with the driver's node, as the batch does)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}


def current_owner() -> str:
    """The Ray task this code runs in (the driver: 'driver'); the key a dead worker's holdings are released by."""
    try:
        context = ray.get_runtime_context()
        task = context.get_task_id() if context.worker.mode == ray.WORKER_MODE else None  # the driver's: a warning
    except Exception:  # not connected: a budget used outside Ray
        task = None
    return task or "driver"


@dataclass
class _Account:
    ledger: Ledger
    open: dict[int, tuple[str, Reservation]] = field(default_factory=dict)  # rid -> (owner, reservation)


@dataclass
class _Pool:
    size: int
    changed: asyncio.Condition
    held: dict[str, str] = field(default_factory=dict)  # token -> owner
    given_up: set[str] = field(default_factory=set)  # tokens whose caller stopped waiting (before its acquire landed)
    peak: int = 0


@ray.remote(num_cpus=0, max_restarts=0)
class BatchHub:
    """Budgets, slot pools and event channels, each under its own key. An async actor: a caller waiting for a slot
    holds no thread, and every method runs on the one event loop, so each runs whole, in the order callers sent
    them (the ledger's reservations are as exact as in one process)."""

    def __init__(self) -> None:
        self.accounts: dict[str, _Account] = {}
        self.pools: dict[str, _Pool] = {}
        self.channels: dict[str, list[Delivery]] = {}
        self.ids = itertools.count()

    async def drop(self, key: str) -> None:
        self.accounts.pop(key, None)
        self.pools.pop(key, None)
        self.channels.pop(key, None)

    async def keys(self) -> set[str]:
        """The keys of the budgets, pools and channels open now."""
        return {*self.accounts, *self.pools, *self.channels}

    # -- budgets ----------------------------------------------------------------------------------------------
    async def open_budget(self, key: str, limits: Limits) -> None:
        self.accounts[key] = _Account(Ledger(limits))

    async def reserve(
        self, key: str, owner: str, input_tokens: int, max_output: int, input_rate: float, output_rate: float
    ) -> tuple[int, Reservation] | tuple[str, str] | None:
        account = self.accounts[key]
        try:
            reservation = account.ledger.reserve(input_tokens, max_output, input_rate, output_rate)
        except BudgetExhausted as refused:
            return refused.limit, str(refused)
        if reservation is None:
            return None
        rid = next(self.ids)
        account.open[rid] = (owner, reservation)
        return rid, reservation

    async def settle(self, key: str, rid: int, actual: Usage) -> None:
        account = self.accounts.get(key)
        held = None if account is None else account.open.pop(rid, None)
        if account is not None and held is not None:
            account.ledger.settle(held[1], actual)

    async def release(self, key: str, rid: int) -> None:
        account = self.accounts.get(key)
        held = None if account is None else account.open.pop(rid, None)
        if account is not None and held is not None:
            account.ledger.release(held[1])

    async def abandon_reservations(self, key: str, owner: str) -> int:
        """A dead worker's open reservations count at their worst case: its requests may have reached the server."""
        account = self.accounts.get(key)
        if account is None:
            return 0
        gone = [rid for rid, (who, _) in account.open.items() if who == owner]
        for rid in gone:
            reservation = account.open.pop(rid)[1]
            account.ledger.settle(reservation, Usage(input_tokens=reservation.tokens, cost_usd=reservation.cost_usd))
        return len(gone)

    async def record_cached(self, key: str) -> None:
        self.accounts[key].ledger.record_cached()

    async def seconds_left(self, key: str) -> float | None:
        return self.accounts[key].ledger.seconds_left()

    async def check_time(self, key: str) -> tuple[str, str] | None:
        """The refusal when the time budget is spent (returned, as reserve's: raised by the proxy), else None."""
        try:
            self.accounts[key].ledger.check_time()
        except BudgetExhausted as refused:
            return refused.limit, str(refused)
        return None

    async def snapshot(self, key: str) -> Usage:
        return self.accounts[key].ledger.snapshot()

    # -- call slots -------------------------------------------------------------------------------------------
    async def open_pool(self, key: str, size: int) -> None:
        self.pools[key] = _Pool(size, asyncio.Condition())

    async def acquire(self, key: str, token: str, owner: str) -> bool:
        pool = self.pools[key]
        async with pool.changed:
            await pool.changed.wait_for(lambda: len(pool.held) < pool.size or token in pool.given_up)
            if token in pool.given_up:
                pool.given_up.discard(token)
                return False
            pool.held[token] = owner
            pool.peak = max(pool.peak, len(pool.held))
            return True

    async def release_slot(self, key: str, token: str) -> None:
        pool = self.pools.get(key)
        if pool is None:
            return
        async with pool.changed:
            if pool.held.pop(token, None) is None:
                pool.given_up.add(token)
            pool.changed.notify_all()

    async def abandon_slots(self, key: str, owner: str) -> int:
        pool = self.pools.get(key)
        if pool is None:
            return 0
        async with pool.changed:
            gone = [token for token, who in pool.held.items() if who == owner]
            for token in gone:
                del pool.held[token]
            pool.changed.notify_all()
            return len(gone)

    async def counts(self, key: str) -> tuple[int, int]:
        """Slots held now, and the most ever held at once."""
        pool = self.pools[key]
        return len(pool.held), pool.peak

    # -- events -----------------------------------------------------------------------------------------------
    async def open_channel(self, key: str) -> None:
        self.channels[key] = []

    async def push(self, key: str, events: list[Delivery]) -> None:
        if key in self.channels:  # a channel already dropped: its batch ended, and nobody reads it
            self.channels[key].extend(events)

    async def drain(self, key: str) -> list[Delivery]:
        drained, self.channels[key] = self.channels.get(key, []), []
        return drained


_hub_lock = threading.Lock()
_hubs: dict[str, Any] = {}  # this driver's hub, by the Ray job it belongs to (a new ray.init is a new job)


def driver_hub() -> Any:
    """This driver's hub in its current Ray session, started on first use."""
    job = ray.get_runtime_context().get_job_id()
    with _hub_lock:
        if job not in _hubs:
            _hubs.clear()  # a hub of an earlier session ended with it
            _hubs[job] = BatchHub.options(max_concurrency=10_000, **on_this_node()).remote()  # type: ignore[attr-defined]
        return _hubs[job]


class HubKey:
    """A key of its own on a hub; pickles as the hub's handle and the key. The driver's own object drops the key
    from the hub when it is collected (copies on workers do not)."""

    def __init__(self, hub: Any, key: str) -> None:
        self.hub, self.key = hub, key

    def __getstate__(self) -> dict[str, Any]:
        return {"hub": self.hub, "key": self.key}

    def _drop_when_collected(self) -> None:
        weakref.finalize(self, _drop, self.hub, self.key).atexit = False  # at exit the session ends, and the hub


def _drop(hub: Any, key: str) -> None:
    if ray.is_initialized():  # else the hub ended with its session, and the key with it
        hub.drop.remote(key)


class RayBudget(HubKey):
    """The `Budget` a worker's calls are charged to: each method one call to the hub's ledger under this key."""

    @classmethod
    def create(cls, limits: Limits) -> RayBudget:
        budget = cls(driver_hub(), uuid.uuid4().hex)
        ray.get(budget.hub.open_budget.remote(budget.key, limits))
        budget._drop_when_collected()
        return budget

    def reserve(
        self, input_tokens: int, max_output: int, input_rate: float = 0.0, output_rate: float = 0.0
    ) -> Reservation | None:
        owner = current_owner()
        answer = ray.get(self.hub.reserve.remote(self.key, owner, input_tokens, max_output, input_rate, output_rate))
        if answer is None:
            return None
        first, second = answer
        if isinstance(first, str):
            raise BudgetExhausted(first, str(second))
        return _Held(second.tokens, second.cost_usd, second.output_cap, rid=first)

    def settle(self, reservation: Reservation, actual: Usage) -> None:
        if not reservation.settled:
            reservation.settled = True
            ray.get(self.hub.settle.remote(self.key, _rid(reservation), actual))

    def release(self, reservation: Reservation) -> None:
        if not reservation.settled:
            reservation.settled = True
            ray.get(self.hub.release.remote(self.key, _rid(reservation)))

    def abandon(self, owner: str) -> None:
        ray.get(self.hub.abandon_reservations.remote(self.key, owner))

    def record_cached(self) -> None:
        ray.get(self.hub.record_cached.remote(self.key))

    def seconds_left(self) -> float | None:
        left: float | None = ray.get(self.hub.seconds_left.remote(self.key))
        return left

    def check_time(self) -> None:
        refused = ray.get(self.hub.check_time.remote(self.key))
        if refused is not None:
            raise BudgetExhausted(*refused)

    def snapshot(self) -> Usage:
        used: Usage = ray.get(self.hub.snapshot.remote(self.key))
        return used


@dataclass
class _Held(Reservation):
    rid: int = -1


def _rid(reservation: Reservation) -> int:
    if not isinstance(reservation, _Held):
        raise TypeError("a reservation of another budget")
    return reservation.rid


_token: contextvars.ContextVar[str | None] = contextvars.ContextVar("rlm_ray_slot", default=None)


class RaySlots(HubKey):
    """The `Slots` a worker's calls take: `size` slots of the hub's pool under this key, held per call attempt (each
    asyncio task its own token)."""

    def __init__(self, hub: Any, key: str, size: int) -> None:
        super().__init__(hub, key)
        self.size = size

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "size": self.size}

    @classmethod
    def create(cls, size: int) -> RaySlots:
        slots = cls(driver_hub(), uuid.uuid4().hex, size)
        ray.get(slots.hub.open_pool.remote(slots.key, size))
        slots._drop_when_collected()
        return slots

    async def __aenter__(self) -> RaySlots:
        token = uuid.uuid4().hex
        try:
            await self.hub.acquire.remote(self.key, token, current_owner())
        except BaseException:  # cancelled while waiting: the slot, if it was given, goes back
            self.hub.release_slot.remote(self.key, token)
            raise
        _token.set(token)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        token = _token.get()
        if token is not None:
            _token.set(None)
            await self.hub.release_slot.remote(self.key, token)

    def abandon(self, owner: str) -> None:
        ray.get(self.hub.abandon_slots.remote(self.key, owner))

    def counts(self) -> tuple[int, int]:
        held: tuple[int, int] = ray.get(self.hub.counts.remote(self.key))
        return held
