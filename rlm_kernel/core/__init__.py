"""The RLM engine. Imports nothing from Jupyter nor from the rest of the package; litellm on the first model call."""

from rlm_kernel.core.engine import RLM
from rlm_kernel.core.errors import (
    BudgetExhausted,
    ConfigError,
    ContextError,
    ModelError,
    RLMError,
    RunFailed,
    RunInterrupted,
    TransientModelError,
)
from rlm_kernel.core.ledger import Limits, Usage
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import Event, Trace

__all__ = [
    "RLM",
    "BudgetExhausted",
    "ConfigError",
    "ContextError",
    "Event",
    "Limits",
    "ModelError",
    "RLMError",
    "RLMResult",
    "RunFailed",
    "RunInterrupted",
    "Trace",
    "TransientModelError",
    "Usage",
]
