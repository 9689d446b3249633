"""One ledger for a whole call tree: every model call of every node is charged here."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass

from rlm_kernel.core.errors import BudgetExhausted


@dataclass
class Usage:
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    # False once any call's cost could not be priced (unknown model): cost_usd is then a lower bound.
    cost_known: bool = True

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, other: Usage) -> None:
        self.llm_calls += other.llm_calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.cost_known = self.cost_known and other.cost_known

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


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
    settled: bool = False


class Ledger:
    """Thread-safe accounting against tree-wide limits.

    A call first reserves its worst case (one call, its estimated input plus its
    output cap, their price), so concurrent calls can never jointly overspend;
    settling replaces the reservation with what the provider reported.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.used = Usage()
        self.started = time.monotonic()
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        self._lock = threading.Lock()
        self.stopped_by: str | None = None

    def seconds_left(self) -> float | None:
        if self.limits.max_seconds is None:
            return None
        return self.limits.max_seconds - (time.monotonic() - self.started)

    def output_cap(self, estimated_input: int) -> int | None:
        """The most output tokens a call may produce without passing max_tokens."""
        if self.limits.max_tokens is None:
            return None
        with self._lock:
            left = self.limits.max_tokens - self.used.tokens - self._reserved_tokens
        return left - estimated_input

    def reserve(self, input_tokens: int, output_tokens: int, cost_usd: float = 0.0) -> Reservation:
        """Charge one call's worst case, or raise BudgetExhausted naming the limit."""
        lim = self.limits
        with self._lock:
            if lim.max_llm_calls is not None and self.used.llm_calls >= lim.max_llm_calls:
                self._refuse("max_llm_calls", f"all {lim.max_llm_calls} model calls are used")
            left = self.seconds_left()
            if left is not None and left <= 0:
                self._refuse("max_seconds", f"the {lim.max_seconds:g} s time budget is spent")
            tokens = input_tokens + output_tokens
            if lim.max_tokens is not None and (
                self.used.tokens + self._reserved_tokens + tokens > lim.max_tokens or output_tokens <= 0
            ):
                self._refuse("max_tokens", f"the {lim.max_tokens:,} token budget cannot cover another call")
            if lim.max_cost_usd is not None and (
                self.used.cost_usd + self._reserved_cost + cost_usd > lim.max_cost_usd
            ):
                self._refuse("max_cost_usd", f"the ${lim.max_cost_usd:g} cost budget cannot cover another call")
            # The call counts as soon as it is sent: a failed attempt still cost a request.
            self.used.llm_calls += 1
            self._reserved_tokens += tokens
            self._reserved_cost += cost_usd
        return Reservation(tokens, cost_usd)

    def settle(self, reservation: Reservation, actual: Usage) -> None:
        with self._lock:
            if reservation.settled:
                return
            reservation.settled = True
            self._reserved_tokens -= reservation.tokens
            self._reserved_cost -= reservation.cost_usd
            self.used.input_tokens += actual.input_tokens
            self.used.output_tokens += actual.output_tokens
            self.used.cost_usd += actual.cost_usd
            self.used.cost_known = self.used.cost_known and actual.cost_known

    def snapshot(self) -> Usage:
        with self._lock:
            return Usage(**asdict(self.used))

    def _refuse(self, limit: str, why: str) -> None:
        self.stopped_by = self.stopped_by or limit
        raise BudgetExhausted(limit, f"budget exhausted ({limit}): {why}. Aggregate what you have and submit your answer now.")
