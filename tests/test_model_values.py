"""Model-made values the engine touches (issue 13, item 9): whatever their __len__ or __str__ does, the run ends
with a status and a trace, and a KeyboardInterrupt that model code raises is an error, not the user's stop."""

from __future__ import annotations

import time

import pytest

from rlm_kernel import RLM
from rlm_kernel.models.policies import register_policy
from tests.conftest import repl

HOSTILE_LEN = "class Bad:\n    def __len__(self):\n{body}\nbad = Bad()\nprint('made')"


@pytest.mark.parametrize(
    "body",
    ["        raise RuntimeError('no length')", "        while True:\n            pass"],
    ids=["raises", "loops"],
)
def test_a_variable_whose_len_raises_or_loops_does_not_stop_the_run(body):
    model = register_policy([repl(HOSTILE_LEN.format(body=body)), repl("FINAL('still here')")])
    started = time.monotonic()
    result = RLM(model=model).completion("text", "q")
    assert result.status == "done" and result.answer == "still here"
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "make",
    [
        "x = []\nfor _ in range(100_000):\n    x = [x]\nFINAL(x)",
        "class Odd:\n    def __str__(self):\n        raise ValueError('no text')\n    __repr__ = __str__\nFINAL(Odd())",
        "class Slow:\n    def __str__(self):\n        while True:\n            pass\nFINAL(Slow())",
    ],
    ids=["deeply-nested", "str-raises", "str-loops"],
)
def test_an_answer_that_cannot_be_printed_still_ends_the_run(make):
    result = RLM(model=register_policy([repl(make)])).completion("text", "q")
    assert result.status == "done" and result.answer is not None  # the value itself comes back
    assert result.trace.root.answer.startswith("<unprintable ")
    assert result.text.startswith("<unprintable ")


def test_keyboard_interrupt_raised_by_model_code_is_an_error_in_the_observation():
    seen = []

    def policy(messages):
        if len(messages) > 2:
            seen.append(messages[-1]["content"])
            return repl("FINAL('went on')")
        return repl("raise KeyboardInterrupt")

    result = RLM(model=register_policy(policy)).completion("text", "q")
    assert result.status == "done" and result.answer == "went on"
    assert "KeyboardInterrupt" in seen[0]
