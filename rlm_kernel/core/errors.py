"""The engine's exception hierarchy."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlm_kernel.core.result import RLMResult


class RLMError(Exception):
    """Base class of every error the engine raises on purpose."""


class ModelError(RLMError):
    """A model call failed and retrying will not help (or the retries ran out)."""


class TransientModelError(ModelError):
    """A model call failed in a way worth retrying: rate limit, 5xx, timeout, garbled reply."""


class BudgetExhausted(RLMError):
    """The tree-wide ledger refused a call; `limit` names the limit that was reached."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by an interrupt; `result` holds the partial result and trace."""

    def __init__(self, result: RLMResult) -> None:
        super().__init__("RLM run interrupted; the partial trace is in .result")
        self.result = result


class SubmitAnswer(BaseException):
    """Raised inside model code by FINAL/FINAL_VAR/answer["ready"] to stop executing at once.

    A BaseException so that a model's `except Exception:` cannot swallow it.
    """

    def __init__(self, value: object, protocol: str) -> None:
        super().__init__(protocol)
        self.value = value
        self.protocol = protocol
