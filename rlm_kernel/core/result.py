"""What a run returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.trace import Trace

STATUSES = ("done", "max_iterations", "budget", "error", "interrupted")


@dataclass
class RLMResult:
    answer: Any  # the Python value submitted (None when there is none)
    status: str  # one of STATUSES
    usage: Usage  # totals for the whole call tree
    trace: Trace
    seconds: float
    error: str | None = None  # why the run stopped early, in one line
    limit: str | None = None  # the budget limit that stopped it, when status == "budget"
    query: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The answer as text ("" when there is none)."""
        return "" if self.answer is None else self.answer if isinstance(self.answer, str) else str(self.answer)

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def summary(self) -> str:
        u = self.usage
        cost = f"${u.cost_usd:.4f}" if u.cost_known else f"${u.cost_usd:.4f} + unknown (unpriced model)"
        return (
            f"status {self.status}; {u.llm_calls} model calls, {u.input_tokens:,} input + "
            f"{u.output_tokens:,} output tokens, {cost}, {self.seconds:.2f} s"
        )

    def __repr__(self) -> str:
        return f"RLMResult(status={self.status!r}, answer={self.text[:80]!r}, {self.summary()})"
