"""Budgets over a whole call tree: a property test over limit values, depth 3 and batched children."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlm_kernel import RLM
from rlm_kernel.core.lm import import_litellm
from rlm_kernel.models.policies import register_policy
from tests.conftest import repl

pytestmark = pytest.mark.slow  # 30 generated trees, each a whole run

INPUT_RATE, OUTPUT_RATE = 1e-6, 4e-6


def _greedy(messages):
    """Never submits: fans out children and sub-calls until a limit stops the tree."""
    if messages[0]["role"] != "system":
        return "sub reply " * 20
    if "start a child RLM" in messages[0]["content"]:
        return repl("outs = rlm_query_batched([(context, 'part ' + str(i)) for i in range(3)])\nprint(outs)")
    return repl("print(llm_query_batched(['summarise ' * 30] * 4))")


MODEL = register_policy(_greedy, "budget-greedy")
import_litellm().register_model(
    {
        MODEL: {
            "input_cost_per_token": INPUT_RATE,
            "output_cost_per_token": OUTPUT_RATE,
            "litellm_provider": "scripted",
            "mode": "chat",
        }
    }
)

limits = st.fixed_dictionaries(
    {},
    optional={
        "max_llm_calls": st.integers(1, 60),
        "max_tokens": st.integers(300, 40_000),
        "max_cost_usd": st.floats(0.0005, 0.05),
        "max_seconds": st.sampled_from([0.3, 1.0]),
    },
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(limits)
def test_the_tree_never_spends_past_a_limit_and_names_the_one_that_stopped_it(chosen):
    result = RLM(
        model=MODEL, max_depth=3, max_iterations=3, child_max_iterations=2, concurrency=8, **chosen
    ).completion("a context " * 100, "spend")
    used = result.usage
    assert used.llm_calls <= chosen.get("max_llm_calls", 10**9)
    assert used.input_tokens + used.output_tokens <= chosen.get("max_tokens", 10**9)
    assert used.cost_usd <= chosen.get("max_cost_usd", 10**9) + 1e-12
    assert used.cost_known
    if "max_seconds" in chosen:
        # Wall time can only be bounded by stopping work at the deadline: calls and code are cut there.
        assert result.seconds <= chosen["max_seconds"] + 0.5
    if result.status == "budget":
        assert result.limit in chosen
    else:
        assert result.status == "max_iterations"
    if not chosen:
        assert result.status == "max_iterations"
