"""The one error tree: every error the project raises on purpose derives from `RLMError`.

Where an error replaced a builtin it derives from that builtin too, so `except ValueError`
keeps working. Each error carries the exit status the CLI gives it (`exit_code`); the magics
show every `RLMError` as one line, without a traceback.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlm_kernel.core.result import RLMResult


class RLMError(Exception):
    """Base class of every error the project raises on purpose; the message is one line for the user."""

    exit_code = 2  # the CLI's exit status: 2 for a usage error, 1 for a run that failed


class ConfigError(RLMError, ValueError):
    """Settings that are invalid or do not fit together."""


class ContextError(RLMError, ValueError):
    """A context the engine cannot work with; the message says why and what to do."""


class AnswerMismatch(RLMError, ValueError):
    """A submitted answer that does not fit the run's `answer_type`; the message says where and why."""


class ApprovalUnavailable(RLMError):
    """Approval was asked for where nobody can answer (no interactive terminal or frontend)."""


class UnpricedModelWarning(RLMError, UserWarning):
    """A warning, not raised: max_cost_usd is set for a model that has no price, so the cost budget cannot bind."""


class ModelError(RLMError):
    """A model call failed and retrying will not help (or the retries ran out)."""

    exit_code = 1


class ModelAuthError(ModelError):
    """The provider refused the credentials (401, 403, no key): retrying cannot help; the message says what to set."""


class ContextTooLong(ModelError):
    """The prompt does not fit the model's context window (a 400 context_length_exceeded)."""


class TransientModelError(ModelError):
    """A model call failed in a way worth retrying: rate limit, 5xx, timeout, garbled reply.

    `retry_after`: the seconds the server asked to wait first (its Retry-After header), None when it did not.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BudgetExhausted(RLMError):
    """The tree-wide ledger refused a call; `limit` names the limit that was reached."""

    exit_code = 1

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


class RunFailed(RLMError):
    """A run that ended with status error or budget; `result` holds its partial result and trace."""

    exit_code = 1

    def __init__(self, message: str, result: RLMResult) -> None:
        super().__init__(message)
        self.result = result


class TraceError(RLMError, ValueError):
    """A file or text that is not a trace of events."""


class IsolationError(RLMError, RuntimeError):
    """The isolated worker could not start, or broke its protocol."""


class ExportError(RLMError, ValueError):
    """A trace that cannot be exported, or a file that holds no export."""


class ReplayError(RLMError, LookupError):
    """A request the recording has no reply for, or a trace that cannot be replayed."""


class PolicyError(RLMError, LookupError):
    """An offline policy name or spec that does not resolve."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by an interrupt; `result` holds the partial result and trace.

    Not an RLMError: it is a KeyboardInterrupt, so that `except Exception` never swallows a stop.
    """

    exit_code = 130

    def __init__(self, result: RLMResult) -> None:
        super().__init__("RLM run interrupted; the partial trace is in .result")
        self.result = result


class BatchInterrupted(KeyboardInterrupt):
    """A batch stopped by an interrupt; `results` holds every question's result in order: the finished ones
    whole, the others partial (status `interrupted`). A KeyboardInterrupt, as RunInterrupted is."""

    exit_code = 130

    def __init__(self, results: list[RLMResult]) -> None:
        done = sum(r.status != "interrupted" for r in results)
        super().__init__(f"batch interrupted; {done} of {len(results)} results finished, all are in .results")
        self.results = results


class BatchCancelled(asyncio.CancelledError):
    """`abatch` cancelled; `results` as BatchInterrupted's. An asyncio.CancelledError, so cancelling still cancels."""

    def __init__(self, results: list[RLMResult]) -> None:
        super().__init__("batch cancelled; every result is in .results")
        self.results = results


class SubmitAnswer(BaseException):
    """Raised inside model code by FINAL/FINAL_VAR/answer["ready"] to stop executing at once.

    A BaseException so that a model's `except Exception:` cannot swallow it.
    """

    def __init__(self, value: object, protocol: str) -> None:
        super().__init__(protocol)
        self.value = value
        self.protocol = protocol
