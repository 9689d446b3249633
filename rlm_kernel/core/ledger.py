"""One ledger for a whole call tree: every model call of every node is charged here."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from rlm_kernel.core.errors import BudgetExhausted


@dataclass
class Usage:
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    # False once any call's cost could not be priced (unknown model): cost_usd is then a lower bound.
    cost_known: bool = True
    # Calls whose server reported no usage: their tokens were counted here, not reported.
    counted_calls: int = 0
    cached_calls: int = 0  # calls answered by the response cache: no request, no tokens, no cost

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: Usage) -> None:
        self.llm_calls += other.llm_calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.cost_known = self.cost_known and other.cost_known
        self.counted_calls += other.counted_calls
        self.cached_calls += other.cached_calls

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    # Every view words usage with these two, so the header, titles, history and the CLI say the same.
    def calls_text(self) -> str:
        """`4 model calls (+2 cached)`: requests sent, a failed attempt included; cache answers apart."""
        calls = f"{self.llm_calls:,} model call{'' if self.llm_calls == 1 else 's'}"
        return calls + (f" (+{self.cached_calls:,} cached)" if self.cached_calls else "")

    def cost_text(self) -> str:
        """`$0.0123`; `cost unknown` (or `$0.0123 + unknown`) once a call was not priced; "" while none was charged."""
        if not self.cost_known:
            return f"${self.cost_usd:.4f} + unknown" if self.cost_usd else "cost unknown"
        return f"${self.cost_usd:.4f}" if self.cost_usd or self.tokens else ""


@dataclass(frozen=True)
class Limits:
    max_llm_calls: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None
    max_seconds: float | None = None


@dataclass
class Reservation:
    tokens: int
    cost_usd: float
    output_cap: int | None  # the most output tokens this call may produce (None: no limit applies)
    settled: bool = False


MIN_OUTPUT_TOKENS = 16  # below this a reply cannot hold a useful step
# What a refused sub-call tells the model; the run's error, which the user reads, goes without it.
BUDGET_NUDGE = "Aggregate what you have and submit your answer now."


@runtime_checkable
class Budget(Protocol):
    """What a run's model calls are charged to. `Ledger` is the one in this process; a budget shared by
    processes (a batch across machines) implements the same seven methods, each safe to call from any thread."""

    def reserve(
        self, input_tokens: int, max_output: int, input_rate: float = 0.0, output_rate: float = 0.0
    ) -> Reservation | None:
        """Charge one call's worst case; None: wait for in-flight calls to settle; raises BudgetExhausted."""
        ...

    def settle(self, reservation: Reservation, actual: Usage) -> None:
        """Replace a reservation with what the call used (once; a second settle changes nothing)."""
        ...

    def release(self, reservation: Reservation) -> None:
        """Undo a reservation whose call was never sent."""
        ...

    def record_cached(self) -> None:
        """Count a call the response cache answered (charged nothing)."""
        ...

    def seconds_left(self) -> float | None:
        """Seconds of the time budget left (None: no time budget)."""
        ...

    def check_time(self) -> None:
        """Raises BudgetExhausted when the time budget is spent (a call it cut short is a budget stop)."""
        ...

    def snapshot(self) -> Usage:
        """What was used so far, as a copy."""
        ...


class Ledger:
    """Thread-safe accounting against tree-wide limits.

    A call first reserves its worst case (one call, its estimated input, an output
    cap, their price), so concurrent calls can never jointly overspend; settling
    replaces the reservation with what the provider reported. A call that would fit
    once in-flight calls settle is told to wait (None) rather than refused.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.used = Usage()
        self.started = time.monotonic()
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        # The most output tokens a reply has had past its call's cap (a server that ignores max_tokens and could
        # not be ended early): every later call reserves that much more, as the server may do it again.
        self._overshoot = 0
        self._lock = threading.Lock()
        self.stopped_by: str | None = None

    def seconds_left(self) -> float | None:
        if self.limits.max_seconds is None:
            return None
        return self.limits.max_seconds - (time.monotonic() - self.started)

    def reserve(
        self, input_tokens: int, max_output: int, input_rate: float = 0.0, output_rate: float = 0.0
    ) -> Reservation | None:
        """Charge one call's worst case; None means "wait for in-flight calls"; raises BudgetExhausted.

        `max_output` is the output the call would like to be able to produce; the rates are
        US dollars per input and per output token (0 when unknown).
        """
        lim = self.limits
        with self._lock:
            if lim.max_llm_calls is not None and self.used.llm_calls >= lim.max_llm_calls:
                self._refuse("max_llm_calls", f"all {lim.max_llm_calls} model calls are used")
            left = self.seconds_left()
            if left is not None and left <= 0:
                self._refuse("max_seconds", f"the {lim.max_seconds:g} s time budget is spent")
            extra = self._overshoot
            room = self._output_room(input_tokens, input_rate, output_rate, self._reserved_tokens, self._reserved_cost)
            if room is not None and room[0] - extra < MIN_OUTPUT_TOKENS:
                alone = self._output_room(input_tokens, input_rate, output_rate, 0, 0.0)
                if alone is not None and alone[0] - extra >= MIN_OUTPUT_TOKENS:
                    return None
                limit = room[1]
                budget = f"{lim.max_tokens:,} token" if limit == "max_tokens" else f"${lim.max_cost_usd:g} cost"
                self._refuse(limit, f"the {budget} budget cannot cover another call")
            cap = None if room is None else min(max_output, room[0] - extra)
            held = 0 if cap is None else cap + extra  # the output this call may bring, its cap's overshoot included
            tokens = input_tokens + held
            cost = input_tokens * input_rate + held * output_rate
            # The call counts as soon as it is sent: a failed attempt still cost a request.
            self.used.llm_calls += 1
            self._reserved_tokens += tokens
            self._reserved_cost += cost
        return Reservation(tokens, cost, cap)

    def _output_room(
        self, input_tokens: int, input_rate: float, output_rate: float, reserved_tokens: int, reserved_cost: float
    ) -> tuple[int, str] | None:
        """The most output tokens the token and cost limits allow, and which limit binds (None: no limit)."""
        lim = self.limits
        rooms = []
        if lim.max_tokens is not None:
            rooms.append((lim.max_tokens - self.used.tokens - reserved_tokens - input_tokens, "max_tokens"))
        if lim.max_cost_usd is not None:
            dollars = lim.max_cost_usd - self.used.cost_usd - reserved_cost - input_tokens * input_rate
            if output_rate > 0:
                rooms.append((math.floor(dollars / output_rate), "max_cost_usd"))
            elif dollars < 0:
                rooms.append((-1, "max_cost_usd"))
        return min(rooms) if rooms else None

    def settle(self, reservation: Reservation, actual: Usage) -> None:
        with self._lock:
            if reservation.settled:
                return
            reservation.settled = True
            self._reserved_tokens -= reservation.tokens
            self._reserved_cost -= reservation.cost_usd
            if reservation.output_cap is not None:
                self._overshoot = max(self._overshoot, actual.output_tokens - reservation.output_cap)
            self.used.input_tokens += actual.input_tokens
            self.used.output_tokens += actual.output_tokens
            self.used.cost_usd += actual.cost_usd
            self.used.cost_known = self.used.cost_known and actual.cost_known
            self.used.counted_calls += actual.counted_calls

    def record_cached(self) -> None:
        """A call the response cache answered: counted apart, charged nothing."""
        with self._lock:
            self.used.cached_calls += 1

    def release(self, reservation: Reservation) -> None:
        """Undo a reservation whose call was never sent (another ledger of a batch refused it)."""
        with self._lock:
            if reservation.settled:
                return
            reservation.settled = True
            self._reserved_tokens -= reservation.tokens
            self._reserved_cost -= reservation.cost_usd
            self.used.llm_calls -= 1

    def snapshot(self) -> Usage:
        with self._lock:
            return Usage(**asdict(self.used))

    def check_time(self) -> None:
        """Raises BudgetExhausted when the time budget is spent (a call it cut short is a budget stop)."""
        left = self.seconds_left()
        if left is not None and left <= 0:
            own = "" if self.limits.max_seconds is None else f"{self.limits.max_seconds:g} s "  # else a batch's
            self._refuse("max_seconds", f"the {own}time budget is spent")

    def _refuse(self, limit: str, why: str) -> None:
        self.stopped_by = self.stopped_by or limit
        raise BudgetExhausted(limit, f"budget exhausted ({limit}): {why}. {BUDGET_NUDGE}")


@dataclass
class _Joint(Reservation):
    shared: Reservation | None = None


class JointBudget:
    """Charges two budgets at once (a question's own and its batch's): a call goes out only when both have room."""

    def __init__(self, own: Budget, shared: Budget) -> None:
        self.own, self.shared = own, shared

    def seconds_left(self) -> float | None:
        left = [s for s in (self.own.seconds_left(), self.shared.seconds_left()) if s is not None]
        return min(left) if left else None

    def reserve(
        self, input_tokens: int, max_output: int, input_rate: float = 0.0, output_rate: float = 0.0
    ) -> Reservation | None:
        own = self.own.reserve(input_tokens, max_output, input_rate, output_rate)
        if own is None:
            return None
        cap = max_output if own.output_cap is None else own.output_cap
        try:
            shared = self.shared.reserve(input_tokens, cap, input_rate, output_rate)
        except BudgetExhausted:
            self.own.release(own)
            raise
        if shared is None:
            self.own.release(own)
            return None
        caps = [c for c in (own.output_cap, shared.output_cap) if c is not None]
        return _Joint(own.tokens, own.cost_usd, min(caps) if caps else None, shared=shared)

    def settle(self, reservation: Reservation, actual: Usage) -> None:
        if isinstance(reservation, _Joint) and reservation.shared is not None:
            self.shared.settle(reservation.shared, actual)
        self.own.settle(reservation, actual)

    def release(self, reservation: Reservation) -> None:
        if isinstance(reservation, _Joint) and reservation.shared is not None:
            self.shared.release(reservation.shared)
        self.own.release(reservation)

    def record_cached(self) -> None:
        self.own.record_cached()
        self.shared.record_cached()

    def check_time(self) -> None:
        self.own.check_time()
        self.shared.check_time()

    def snapshot(self) -> Usage:
        """The question's own usage (the batch's is the shared budget's snapshot)."""
        return self.own.snapshot()
