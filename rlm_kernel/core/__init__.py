"""The RLM engine. Imports nothing from Jupyter; litellm only on the first model call."""

from rlm_kernel.core.engine import RLM
from rlm_kernel.core.errors import BudgetExhausted, ModelError, RLMError, RunInterrupted, TransientModelError
from rlm_kernel.core.ledger import Limits, Usage
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import Event, Trace

__all__ = [
    "RLM",
    "BudgetExhausted",
    "Event",
    "Limits",
    "ModelError",
    "RLMError",
    "RLMResult",
    "RunInterrupted",
    "Trace",
    "TransientModelError",
    "Usage",
]
