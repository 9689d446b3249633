"""Shared fixtures: every test runs offline; models are scripted policies reached through litellm."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from rlm_kernel.models.policies import register_policy  # noqa: E402


def repl(code: str, prose: str = "Working on it.") -> str:
    """A model reply with one ```repl block."""
    return f"{prose}\n```repl\n{code}\n```\n"


@pytest.fixture
def scripted() -> Callable[..., str]:
    """Register replies (a list) or a policy function; returns the litellm model name."""

    def make(policy: Sequence[str] | Callable[[list[dict[str, Any]]], str]) -> str:
        return register_policy(policy)

    return make
