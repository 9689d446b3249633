"""The LM layer and the ledger on their own."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest

from rlm_kernel.core.errors import BudgetExhausted, ModelError, TransientModelError
from rlm_kernel.core.ledger import Ledger, Limits, Usage
from rlm_kernel.core.lm import LiteLLM, classify_error, import_litellm


def test_sync_and_async_completion_report_usage(scripted):
    import asyncio

    model = scripted(lambda messages: "pong " + messages[-1]["content"])
    lm = LiteLLM()
    reply = lm.complete([{"role": "user", "content": "ping"}], model=model)
    assert reply.text == "pong ping" and reply.usage.llm_calls == 1 and reply.usage.input_tokens > 0
    assert reply.usage.cost_usd == 0.0 and reply.usage.cost_known
    areply = asyncio.run(lm.acomplete([{"role": "user", "content": "x"}], model=model))
    assert areply.text == "pong x"


def test_known_model_is_priced_and_unknown_model_is_marked_unknown():
    lm = LiteLLM()
    assert lm.price("gpt-4o-mini", 1_000_000, 0) > 0
    assert lm.price("openai/some-local-model-nobody-prices", 1000, 1000) is None
    assert lm.price("openai/some-local-model-nobody-prices", 1000, 1000) is None  # the remembered miss
    assert lm.price("gpt-4o-mini", 2_000_000, 0) == 2 * lm.price("gpt-4o-mini", 1_000_000, 0)


def test_errors_are_classified_and_keys_redacted():
    litellm = import_litellm()
    rate = litellm.RateLimitError("slow down sk-secret-123", llm_provider="openai", model="m")
    assert isinstance(classify_error(litellm, rate, "sk-secret-123"), TransientModelError)
    assert "sk-secret-123" not in str(classify_error(litellm, rate, "sk-secret-123"))
    auth = litellm.AuthenticationError("bad key", llm_provider="openai", model="m")
    err = classify_error(litellm, auth, None)
    assert isinstance(err, ModelError) and not isinstance(err, TransientModelError)


def test_ledger_reservations_stop_parallel_overspending():
    ledger = Ledger(Limits(max_llm_calls=50, max_tokens=10_000))
    granted, refused = [], []

    def worker():
        for _ in range(20):
            try:
                while (reservation := ledger.reserve(300, 200)) is None:
                    time.sleep(0)  # fits once the other threads settle
            except BudgetExhausted as exc:
                refused.append(exc.limit)
                continue
            granted.append(1)
            ledger.settle(reservation, Usage(input_tokens=300, output_tokens=200))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    used = ledger.snapshot()
    assert used.tokens <= 10_000 and used.llm_calls <= 50
    assert len(granted) == 20 and set(refused) == {"max_tokens"}


@pytest.mark.parametrize("limit, value", [("max_cost_usd", 0.0), ("max_seconds", 0.0)])
def test_ledger_refuses_when_a_limit_is_spent(limit, value):
    ledger = Ledger(Limits(**{limit: value}))
    with pytest.raises(BudgetExhausted) as caught:
        ledger.reserve(10, 10, 0.01)
    assert caught.value.limit == limit and "submit" in str(caught.value)


def test_a_router_does_not_make_unknown_models_look_priced():
    import asyncio

    from rlm_kernel.models.server import ModelServer

    model = "openai/router-unpriced-model"
    with ModelServer(lambda messages: "ok", model_name="router-unpriced-model") as server:
        # Two deployments of one model: the second registration fills the first one's empty entry.
        router = [
            {"model_name": "pool", "litellm_params": {"model": model, "api_base": server.url, "api_key": "x"}}
            for _ in range(2)
        ]
        reply = asyncio.run(LiteLLM(router=router).acomplete([{"role": "user", "content": "hi"}], model="pool"))
    assert reply.text == "ok" and not reply.usage.cost_known
    assert LiteLLM().price(model, 1000, 1000) is None


def test_litellms_exit_time_logging_worker_errors_are_dropped_and_its_other_errors_kept(caplog):
    from rlm_kernel.core.lm import import_litellm

    import_litellm()
    logger = logging.getLogger("LiteLLM")
    with caplog.at_level(logging.ERROR, logger="LiteLLM"):
        logger.error("LoggingWorker error: %s", "cannot reuse already awaited coroutine")
        logger.error("something the user should see")
    assert [r.getMessage() for r in caplog.records] == ["something the user should see"]


def test_litellms_unawaited_provider_coroutine_of_a_cancelled_call_is_not_warned_about():
    # In a fresh process, as a user meets it: pytest discards the filters set while it collects tests.
    code = (
        "import warnings, rlm_kernel\n"
        "warnings.warn(\"coroutine '_handler.<locals>.OfflineLLM.acompletion' was never awaited\", RuntimeWarning)\n"
        "warnings.warn(\"coroutine 'model_code' was never awaited\", RuntimeWarning)\n"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stderr
    assert "model_code" in shown and "acompletion" not in shown, shown


def test_the_scripted_providers_coroutine_does_nothing_and_warns_nothing_until_awaited(scripted):
    import asyncio
    import gc
    import warnings

    litellm = import_litellm()
    handler = next(e["custom_handler"] for e in litellm.custom_provider_map if e["provider"] == "scripted")
    messages, policy = [{"role": "user", "content": "q"}], scripted(["hi"]).split("/", 1)[1]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        handler.acompletion(policy, messages)  # what litellm drops when its caller is cancelled
        gc.collect()
    assert not [w for w in seen if "never awaited" in str(w.message)]
    reply = asyncio.run(handler.acompletion(policy, messages))
    assert reply.choices[0].message.content == "hi"
