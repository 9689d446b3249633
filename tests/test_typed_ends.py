"""A typed run that ends unfinished (issue 23 item 11): the answer is a T or None, and unpriced budgets warn."""

from __future__ import annotations

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.errors import UnpricedModelWarning
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block


def test_after_max_iterations_a_wrong_typed_answer_is_none_and_the_error_says_why():
    policy = Recorder(lambda messages: block("answer['content'] = 'not a number'"))
    with ModelServer(policy) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, max_iterations=2)
        result = rlm.completion("c", "q", answer_type=int)
    assert (result.status, result.answer) == ("max_iterations", None)
    assert "its last answer is no int" in result.error and "'not a number'" in result.error


def test_after_max_iterations_the_last_words_are_converted_when_they_fit():
    def root(messages):
        if "no more code will run" in str(messages[-1]["content"]):
            return "FINAL('7')"
        return block("x = 1")

    with ModelServer(Recorder(root)) as server:
        result = RLM(model="openai/policy", api_base=server.url, max_iterations=2).completion("c", "q", answer_type=int)
    assert result.status == "max_iterations"
    assert result.answer == 7 and type(result.answer) is int


def test_a_batch_cost_limit_on_an_unpriced_model_warns_as_a_single_run_does():
    with ModelServer(Recorder(lambda messages: "FINAL(1)")) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        with pytest.warns(UnpricedModelWarning, match="max_cost_usd=0.5 cannot bind.*openai/policy"):
            results = rlm.batch([("c", "q1"), ("c", "q2")], max_cost_usd=0.5)
        assert [r.answer for r in results] == [1, 1]
        with pytest.warns(UnpricedModelWarning, match="max_cost_usd=0.5 cannot bind"):
            RLM(model="openai/policy", api_base=server.url, max_cost_usd=0.5).completion("c", "q")
