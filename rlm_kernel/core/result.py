"""What a run returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.repl import contained
from rlm_kernel.core.trace import Trace


@dataclass(frozen=True)
class EarlierTurn:
    """A question asked before this one in the same session, and the context it was asked about."""

    trace: Trace
    context: object


class NotebookWriter(Protocol):
    def __call__(
        self,
        trace: Trace,
        path: str | Path,
        *,
        context: object,
        with_context: bool | None,
        earlier: Sequence[EarlierTurn],
    ) -> Any: ...


_notebook_writers: list[NotebookWriter] = []


def register_notebook_writer(writer: NotebookWriter) -> None:
    """What `RLMResult.to_notebook` calls (rlm_kernel.formats.notebook, registered by the package)."""
    _notebook_writers[:] = [writer]


@dataclass
class RLMResult:
    answer: Any  # the Python value submitted (None when there is none)
    status: str  # done, max_iterations, budget, error or interrupted
    usage: Usage  # totals for the whole call tree
    trace: Trace
    seconds: float
    error: str | None = None  # why the run stopped early, in one line
    limit: str | None = None  # the budget limit that stopped it, when status == "budget"
    query: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # The caller's variables that model code rebound, with their values before the run (set by the notebook).
    replaced: dict[str, Any] = field(default_factory=dict)
    # A session's questions before this one, oldest first: its export replays them first (their variables).
    earlier: tuple[EarlierTurn, ...] = field(default=(), repr=False)

    @property
    def text(self) -> str:
        """The answer as text ("" when there is none)."""
        answer = self.answer
        if answer is None or isinstance(answer, str):
            return answer or ""
        return contained(lambda: str(answer), lambda exc: f"<unprintable {type(answer).__name__}>")

    @property
    def ok(self) -> bool:
        return self.status == "done"

    def summary(self) -> str:
        u = self.usage
        counted = f" (counted here for {u.counted_calls}: the server reported no usage)" if u.counted_calls else ""
        cost = f", {u.cost_text()}" if u.cost_text() else ""
        return (
            f"status {self.status}; {u.calls_text()}, {u.input_tokens:,} input + "
            f"{u.output_tokens:,} output tokens{counted}{cost}, {self.seconds:.2f} s"
        )

    def to_notebook(self, path: str | Path, context: object = None, *, with_context: bool | None = None) -> Any:
        """Write the run as a notebook (nbformat v4) that reads as a report.

        Pass the run's `context` to embed it, so that the notebook re-runs offline (contexts over
        20 MB only with `with_context=True`; `with_context=False` never embeds one). A session's
        follow-up question brings the questions before it, which the notebook replays first.
        """
        if not _notebook_writers:
            raise ConfigError("no notebook writer is registered (import rlm_kernel to register it)")
        return _notebook_writers[0](self.trace, path, context=context, with_context=with_context, earlier=self.earlier)

    def __repr__(self) -> str:
        return f"RLMResult(status={self.status!r}, answer={self.text[:80]!r}, {self.summary()})"
