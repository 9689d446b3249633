"""One model call with retries and budget reservations, and a reply streamed as throttled events."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from rlm_kernel.core.cache import CachedLM
from rlm_kernel.core.errors import ModelError, TransientModelError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import LM, Completion, Messages
from rlm_kernel.core.redact import Redactor, StreamRedactor

if TYPE_CHECKING:
    from rlm_kernel.core.tree import CallTree

MODEL_TEXT_INTERVAL = 0.1  # seconds between model_text events of one node: at most about 10 a second


async def call_with_retries(
    tree: CallTree,
    messages: Messages,
    model: str,
    lm: LM,
    params: Mapping[str, Any],
    on_attempt: Callable[[int], None] | None = None,
    stream: TextStream | None = None,
) -> Completion:
    """One model call with retries; every attempt takes one of the tree's call slots and is charged to its budget."""
    policy = tree.config.calls
    messages = [{**m, "content": tree.redacted(str(m["content"]))} for m in messages]
    # The cap a call may get: the configured one under a budget (which reserves it), else none.
    cap = policy.max_output_tokens if tree.config.budgeted else None
    if not isinstance(lm, CachedLM):
        return await _call(tree, messages, model, lm, params, on_attempt, stream)
    found = await lm.join(messages, model=model, params=params, max_output_tokens=cap, samples=tree.samples)
    if isinstance(found, Completion):
        tree.budget.record_cached()  # answered from the response cache, or by an identical call in flight: no request
        return found
    with found:  # this call answers its key: identical calls wait for its reply (or, should it fail, make their own)
        return await _call(tree, messages, model, lm, params, on_attempt, stream)


async def _call(
    tree: CallTree,
    messages: Messages,
    model: str,
    lm: LM,
    params: Mapping[str, Any],
    on_attempt: Callable[[int], None] | None,
    stream: TextStream | None,
) -> Completion:
    ledger, policy = tree.budget, tree.config.calls
    chars = sum(len(str(m["content"])) for m in messages)
    # Past calls of this run tell how the provider counts (CJK text: about a token a character, not three).
    estimate = max(lm.estimate_tokens(messages), math.ceil(chars * tree.tokens_per_char))
    in_rate = out_rate = 0.0
    if tree.config.limits.max_cost_usd is not None:
        in_rate, out_rate = lm.price(model, 1, 0) or 0.0, lm.price(model, 0, 1) or 0.0
    streaming: dict[str, Any] = {} if stream is None else {"on_text": stream.add}
    for attempt in itertools.count():
        # Reserve inside the slot, so calls queued for one hold no budget.
        async with tree.slots:
            while (reservation := ledger.reserve(estimate, policy.max_output_tokens, in_rate, out_rate)) is None:
                await asyncio.sleep(0.01)  # it fits once in-flight calls settle
            left = ledger.seconds_left()
            timeout = policy.call_timeout if left is None else max(0.01, min(policy.call_timeout, left))
            if on_attempt is not None:
                on_attempt(attempt)
            if stream is not None:
                stream.restart()
            call = lm.acomplete(
                messages,
                model=model,
                max_output_tokens=reservation.output_cap,
                timeout=timeout,
                params=params,
                **streaming,
            )
            try:
                # A total deadline per attempt, whatever the transport's own timeouts do (httpx's is per read).
                completion = await asyncio.wait_for(call, timeout)
            except (TransientModelError, asyncio.TimeoutError) as exc:
                ledger.settle(reservation, Usage())
                failure: Exception = exc
                if isinstance(exc, asyncio.TimeoutError):
                    failure = TransientModelError(f"Timeout: {model} sent no whole reply within {timeout:.3g} s")
            except BaseException:
                ledger.settle(reservation, Usage())
                raise
            else:
                ledger.settle(reservation, completion.usage)
                if chars and completion.usage.input_tokens:
                    tree.tokens_per_char = max(tree.tokens_per_char, completion.usage.input_tokens / chars)
                return completion
        ledger.check_time()  # the time budget ran out during the call: the run's limit, not the model's failure
        left = ledger.seconds_left()
        if attempt >= policy.retries:
            raise ModelError(f"{failure} (gave up after {attempt + 1} attempt{'s' if attempt else ''})") from None
        await asyncio.sleep(retry_wait(failure, attempt, policy.retry_backoff, policy.max_retry_wait, left))
    raise AssertionError("unreachable")


def retry_wait(failure: Exception, attempt: int, backoff: float, max_wait: float, left: float | None) -> float:
    """Seconds before the next attempt: the server's Retry-After when it sent one, else exponential backoff with
    jitter; never more than `max_retry_wait` nor the run's remaining time (the retry then finds the limit spent)."""
    asked = getattr(failure, "retry_after", None)
    wait = float(asked) if asked is not None else backoff * 2**attempt * random.uniform(0.5, 1.0)
    wait = min(wait, max_wait)
    return wait if left is None else max(0.0, min(wait, left))


class TextStream:
    """A node's reply as it streams: model_text events at most every MODEL_TEXT_INTERVAL s, pieces joined between,
    redacted across pieces (a secret split between two pieces is still one secret)."""

    def __init__(self, emit: Callable[..., None], iteration: int, redactor: Redactor | None = None) -> None:
        self._emit, self._iteration = emit, iteration
        self._pending: list[str] = []
        self._last = 0.0
        self._lock = threading.Lock()
        self._redacting = StreamRedactor(redactor) if redactor is not None else None

    def add(self, piece: str) -> None:
        with self._lock:
            self._pending.append(piece)
            if time.monotonic() - self._last < MODEL_TEXT_INTERVAL:
                return
        self._flush(final=False)

    def restart(self) -> None:
        """A retry starts the reply again: what a failed attempt streamed is dropped unsent."""
        with self._lock:
            self._pending.clear()
            if self._redacting is not None:
                self._redacting.restart()

    def flush(self) -> None:
        """The reply is whole: show the rest."""
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        with self._lock:
            text, self._pending = "".join(self._pending), []
            self._last = time.monotonic()
            if self._redacting is not None:
                text = self._redacting.add(text, final)
        if text:
            self._emit("model_text", iteration=self._iteration, text=text)
