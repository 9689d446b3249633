"""The LM layer, the provider extension point: the `LM` protocol and its two transports.

- `litellm_lm`: `LiteLLM`, every provider through litellm (imported on the first call), and
  `on_litellm_import`, how a litellm custom provider plugs in.
- `direct`: `OpenAICompatibleLM`, OpenAI's chat-completions format (and, through `anthropic`, Anthropic's
  Messages API) posted with aiohttp, and `picks_direct`, what `transport="auto"` sends there.
- `support`: what both share (naming failures, settling usage, run prices, streamed text).
- `price_map`: litellm's price map read as a file, without importing litellm.

A new provider is anything with the `LM` protocol, passed as `RLM(lm=...)` (ARCHITECTURE.md).
"""

from rlm_kernel.core.lm.litellm_lm import (
    LM,
    NO_KEY,
    OFFLINE_PROVIDERS,
    Completion,
    LiteLLM,
    Messages,
    count_tokens,
    import_litellm,
    input_window,
    litellm_price,
    on_litellm_import,
)
from rlm_kernel.core.lm.support import classify_error

__all__ = [
    "LM",
    "NO_KEY",
    "OFFLINE_PROVIDERS",
    "Completion",
    "LiteLLM",
    "Messages",
    "classify_error",
    "count_tokens",
    "import_litellm",
    "input_window",
    "litellm_price",
    "on_litellm_import",
]
