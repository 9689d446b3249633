"""One model call with retries and budget reservations, and a reply streamed as throttled events."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from rlm_kernel.core.cache import CachedLM
from rlm_kernel.core.errors import ModelError, TransientModelError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import LM, Completion, Messages
from rlm_kernel.core.lm.support import ESTIMATE_CHARS_PER_TOKEN
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
            watch = None
            if reservation.output_cap is not None and _can_stream(lm, model):
                # Under a budget the reply streams, so that a server that ignores max_tokens is ended at the cap.
                watch = _CapWatch(reservation.output_cap, tree.tokens_per_char, stream, asyncio.get_running_loop())
            sink = watch.add if watch is not None else None if stream is None else stream.add
            call = lm.acomplete(
                messages,
                model=model,
                max_output_tokens=reservation.output_cap,
                timeout=timeout,
                params=params,
                **({} if sink is None else {"on_text": sink}),
            )
            try:
                # A total deadline per attempt, whatever the transport's own timeouts do (httpx's is per read).
                replied = await asyncio.wait_for(call if watch is None else watch.run(call), timeout)
            except (TransientModelError, asyncio.TimeoutError) as exc:
                ledger.settle(reservation, Usage())
                failure: Exception = exc
                if isinstance(exc, asyncio.TimeoutError):
                    failure = TransientModelError(f"Timeout: {model} sent no whole reply within {timeout:.3g} s")
            except BaseException:
                ledger.settle(reservation, Usage())
                raise
            else:
                if replied is None:  # a server that ignores max_tokens, ended at the cap
                    assert watch is not None
                    completion = watch.completion(model, lm, estimate)
                else:
                    completion = replied
                ledger.settle(reservation, completion.usage)
                if chars and completion.usage.input_tokens and replied is not None:  # a cut reply reported nothing
                    tree.tokens_per_char = max(tree.tokens_per_char, completion.usage.input_tokens / chars)
                return completion
        ledger.check_time()  # the time budget ran out during the call: the run's limit, not the model's failure
        left = ledger.seconds_left()
        if attempt >= policy.retries:
            raise ModelError(f"{failure} (gave up after {attempt + 1} attempt{'s' if attempt else ''})") from None
        await asyncio.sleep(retry_wait(failure, attempt, policy.retry_backoff, policy.max_retry_wait, left))
    raise AssertionError("unreachable")


def _can_stream(lm: LM, model: str) -> bool:
    streams = getattr(lm, "can_stream", None)
    return bool(streams(model)) if callable(streams) else False


class _CapWatch:
    """Counts a streamed reply's output tokens and ends the call once they pass its cap: a server that ignores
    max_tokens would otherwise go on generating what the budget never reserved. Tokens are counted at the rate the
    provider reported for this run's prompts (else the reservations' deliberately high 3 characters a token)."""

    def __init__(
        self, cap: int, tokens_per_char: float, stream: TextStream | None, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.cap, self._stream, self._loop = cap, stream, loop
        self._rate = tokens_per_char or 1 / ESTIMATE_CHARS_PER_TOKEN
        self._pieces: list[str] = []
        self._chars = 0
        self._passed = asyncio.Event()
        self._started = time.perf_counter()

    def add(self, piece: str) -> None:
        """The transport's sink, called on whichever loop runs the call."""
        if self._passed.is_set():
            return  # pieces already on their way when the call was ended
        if self._stream is not None:
            self._stream.add(piece)
        self._pieces.append(piece)
        self._chars += len(piece)
        if self._chars * self._rate > self.cap:
            self._loop.call_soon_threadsafe(self._passed.set)

    async def run(self, call: Awaitable[Completion]) -> Completion | None:
        """The call's completion, or None once its reply passed the cap (the call is then ended)."""
        call_task = asyncio.ensure_future(call)
        passed = asyncio.ensure_future(self._passed.wait())
        try:
            await asyncio.wait({call_task, passed}, return_when=asyncio.FIRST_COMPLETED)
            if call_task.done():
                return call_task.result()
            return None
        finally:
            for task in (call_task, passed):
                task.cancel()
            await asyncio.gather(call_task, passed, return_exceptions=True)  # the connection is closed before we go on

    def completion(self, model: str, lm: LM, input_tokens: int) -> Completion:
        """The reply up to its cap (the piece that passed it may have held more), charged the prompt's reserved
        estimate (its usage never came) and the output counted."""
        text = "".join(self._pieces)[: math.floor(self.cap / self._rate)]
        output = min(self.cap, math.ceil(len(text) * self._rate))
        cost = lm.price(model, input_tokens, output)
        usage = Usage(1, input_tokens, output, cost or 0.0, cost is not None, counted_calls=1)
        return Completion(text, usage, model, time.perf_counter() - self._started)


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
