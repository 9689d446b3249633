"""The offline litellm providers: `scripted/<policy>` (replies from a registered policy) and `replay/<session>`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from rlm_kernel.models.policies import count_tokens, get_policy, messages_tokens

PROVIDER = "scripted"

# (model without the provider prefix, messages, litellm's kwargs) -> (reply, prompt tokens, completion tokens)
Responder = Callable[[str, list[dict[str, Any]], dict[str, Any]], tuple[str, int, int]]


def register(litellm: Any) -> None:
    """Add the scripted and replay providers to litellm's custom provider map (idempotent)."""
    from rlm_kernel.models import recorded as replay

    known = {entry.get("provider") for entry in litellm.custom_provider_map}
    added = [
        {"provider": provider, "custom_handler": _handler(provider, respond)}
        for provider, respond in ((PROVIDER, _scripted_reply), (replay.PROVIDER, replay.respond))
        if provider not in known
    ]
    litellm.custom_provider_map = [*litellm.custom_provider_map, *added]


def _scripted_reply(model: str, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> tuple[str, int, int]:
    reply = get_policy(model)(messages)
    cap = (kwargs.get("optional_params") or {}).get("max_tokens")
    if cap is not None:
        # Honour the output cap the way a provider would: cut the reply.
        reply = reply[: max(0, int(cap)) * 4]
    return reply, messages_tokens(messages), count_tokens(reply)


def _handler(provider: str, respond: Responder) -> Any:
    from litellm import CustomLLM
    from litellm.types.utils import ModelResponse, Usage

    class OfflineLLM(CustomLLM):
        def completion(self, model: str, messages: list[dict[str, Any]], *args: Any, **kwargs: Any) -> ModelResponse:
            reply, prompt_tokens, completion_tokens = respond(model, messages, kwargs)
            return ModelResponse(
                model=f"{provider}/{model}",
                created=int(time.time()),
                choices=[{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": reply}}],
                usage=Usage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens,
                ),
            )

        def acompletion(
            self, model: str, messages: list[dict[str, Any]], *args: Any, **kwargs: Any
        ) -> Coroutine[Any, Any, ModelResponse]:
            # Policies are plain functions; run them off the loop so a slow one blocks nothing.
            return _Deferred(lambda: asyncio.to_thread(self.completion, model, messages, *args, **kwargs))

    return OfflineLLM()


class _Deferred(Coroutine[Any, Any, Any]):
    """A coroutine whose work starts when it is first awaited. litellm creates the provider's coroutine in an
    executor thread and drops it unawaited when its caller is cancelled meanwhile (a budget stop cancels calls
    in flight): a plain coroutine would then warn that it was never awaited."""

    def __init__(self, start: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self._start = start
        self._inner: Coroutine[Any, Any, Any] | None = None

    def _running(self) -> Coroutine[Any, Any, Any]:
        if self._inner is None:
            self._inner = self._start()
        return self._inner

    def __await__(self) -> Generator[Any, None, Any]:
        return self._running().__await__()

    def send(self, value: Any) -> Any:
        return self._running().send(value)

    def throw(self, *exc: Any) -> Any:
        return self._running().throw(*exc)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
