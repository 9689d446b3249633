"""Attacks on typed answers: the model submits a value whose own methods raise or never return. Checking it runs
those methods, so it runs under the same containment and 2-second deadline as every other model-made value; a
failure goes back to the model as the mismatch message, and the run goes on."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import pytest

from rlm_kernel import RLM
from rlm_kernel.models.policies import register_policy
from tests.conftest import repl


@dataclasses.dataclass
class Person:
    name: str
    age: int


LOUD = "class Loud:\n    def __repr__(self):\n        raise ZeroDivisionError('repr')\n"
HOSTILE = {
    "repr raises": (int, LOUD + "FINAL(Loud())", "FINAL(42)", 42),
    "repr raises, dataclass": (Person, LOUD + "FINAL(Loud())", "FINAL({'name': 'ann', 'age': 3})", Person("ann", 3)),
    "eq loops": (
        Literal["yes", "no"],
        "class Same:\n    __hash__ = object.__hash__\n    def __eq__(self, other):\n        while True:\n            pass\n"
        "FINAL(Same())",
        "FINAL('yes')",
        "yes",
    ),
    "int loops": (
        int,
        "class Big(int):\n    def __int__(self):\n        while True:\n            pass\nFINAL(Big(7))",
        "FINAL(7)",
        7,
    ),
    "iter raises": (
        list[int],
        "class Bad(list):\n    def __iter__(self):\n        raise RuntimeError('iter')\nFINAL(Bad([1]))",
        "FINAL([1])",
        [1],
    ),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_submission_becomes_the_mismatch_message_and_the_run_goes_on(name):
    answer_type, hostile, honest, expected = HOSTILE[name]
    seen: list[str] = []

    def policy(messages: list[dict[str, Any]]) -> str:
        turn = sum(m["role"] == "assistant" for m in messages)
        if turn:
            seen.append(str(messages[-1]["content"]))
        return repl(hostile if turn == 0 else honest)

    result = RLM(model=register_policy(policy), max_iterations=3).completion("c", "q", answer_type=answer_type)
    assert result.status == "done", result.error
    assert result.answer == expected
    assert "Your answer was not accepted" in seen[0]
