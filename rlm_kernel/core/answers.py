"""The answer protocol's functions (FINAL, FINAL_VAR, SHOW_VARS), defined once.

The engine binds them to a node's REPL (core/tools.py) and the isolated worker to its own namespace
(isolation/worker.py), each with two functions of its namespace: how to look a name up, and which variables the
model made. Light on purpose: the worker imports it at start-up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlm_kernel.core.errors import SubmitAnswer
from rlm_kernel.core.values import describe_value

MISSING = object()


def answer_functions(
    lookup: Callable[[str, object], object], made: Callable[[], dict[str, object]]
) -> dict[str, Callable[..., Any]]:
    """FINAL, FINAL_VAR and SHOW_VARS for one namespace: `lookup(name, default)` reads it, `made()` gives the
    variables the model made there, by name."""

    def FINAL(value: Any) -> None:  # noqa: N802 - the protocol's name
        """Submit `value` as the answer; the run ends."""
        raise SubmitAnswer(value, "FINAL")

    def FINAL_VAR(name: Any) -> None:  # noqa: N802
        """Submit the variable called `name` as the answer; the run ends."""
        if not isinstance(name, str):
            raise SubmitAnswer(name, "FINAL_VAR")
        value = lookup(name, MISSING)
        if value is MISSING:
            raise NameError(
                f"FINAL_VAR: there is no variable named {name!r}; assign it first, or submit a value with FINAL(value)"
            )
        raise SubmitAnswer(value, "FINAL_VAR")

    def SHOW_VARS() -> str:  # noqa: N802
        """The variables you have made, with their types and sizes."""
        shown = made()
        return "\n".join(f"{n}: {describe_value(shown[n])}" for n in sorted(shown)) or "(no variables yet)"

    return {"FINAL": FINAL, "FINAL_VAR": FINAL_VAR, "SHOW_VARS": SHOW_VARS}
