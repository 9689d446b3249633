"""The `scripted/<policy>` litellm provider: replies from a registered policy, in process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rlm_kernel.models.policies import count_tokens, get_policy, messages_tokens

PROVIDER = "scripted"


def register(litellm: Any) -> None:
    """Add the scripted provider to litellm's custom provider map (idempotent)."""
    if any(entry.get("provider") == PROVIDER for entry in litellm.custom_provider_map):
        return
    from litellm import CustomLLM
    from litellm.types.utils import ModelResponse, Usage

    class ScriptedLLM(CustomLLM):  # type: ignore[misc]
        def completion(self, model: str, messages: list[dict[str, Any]], *args: Any, **kwargs: Any) -> ModelResponse:
            reply = get_policy(model)(messages)
            cap = (kwargs.get("optional_params") or {}).get("max_tokens")
            if cap is not None:
                # Honour the output cap the way a provider would: cut the reply.
                reply = reply[: max(0, int(cap)) * 4]
            prompt_tokens, completion_tokens = messages_tokens(messages), count_tokens(reply)
            return ModelResponse(
                model=f"{PROVIDER}/{model}",
                created=int(time.time()),
                choices=[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}],
                usage=Usage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens,
                ),
            )

        async def acompletion(self, model: str, messages: list[dict[str, Any]], *args: Any, **kwargs: Any) -> ModelResponse:
            # Policies are plain functions; run them off the loop so a slow one blocks nothing.
            return await asyncio.to_thread(self.completion, model, messages, *args, **kwargs)

    litellm.custom_provider_map = [*litellm.custom_provider_map, {"provider": PROVIDER, "custom_handler": ScriptedLLM()}]
