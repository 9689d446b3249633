"""Offline model policies: functions from a chat transcript to a reply.

A policy stands in for a model. The `scripted` litellm provider and the
`rlm serve-model` HTTP server both serve policies from this registry, so the
engine reaches them through the same litellm code path as a real provider.
"""

from __future__ import annotations

import importlib
import itertools
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

from rlm_kernel.core.errors import PolicyError

Messages = list[dict[str, Any]]
Policy = Callable[[Messages], str]

_registry: dict[str, Policy] = {}
_registry_lock = threading.Lock()
_anonymous_ids = itertools.count(1)


class ScriptedReplies:
    """Replies from a fixed list, in order; raises when the script runs out."""

    def __init__(self, replies: Sequence[str]) -> None:
        self._replies = list(replies)
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self, messages: Messages) -> str:
        with self._lock:
            if self._next >= len(self._replies):
                raise PolicyError(f"scripted replies exhausted after {len(self._replies)} replies")
            reply = self._replies[self._next]
            self._next += 1
            return reply


def register_policy(policy: Policy | Sequence[str], name: str | None = None) -> str:
    """Register a policy (or a list of replies) and return its litellm model name."""
    if isinstance(policy, (list, tuple)):
        policy = ScriptedReplies(policy)
    if not callable(policy):
        raise TypeError("a policy is a callable(messages) -> str or a list of replies")
    name = name or f"anon-{next(_anonymous_ids)}"
    with _registry_lock:
        _registry[name] = policy
    return f"scripted/{name}"


def get_policy(name: str) -> Policy:
    """The registered policy called `name` (with or without the `scripted/` prefix)."""
    name = name.removeprefix("scripted/")
    if name not in _registry and name in _BUILTIN:
        register_policy(_BUILTIN[name](), name)
    try:
        return _registry[name]
    except KeyError:
        known = ", ".join(sorted(set(_registry) | set(_BUILTIN))) or "none"
        raise PolicyError(f"no offline policy named {name!r} (known: {known})") from None


def load_policy(spec: str) -> Policy:
    """A policy from a registered name (`demo`) or an import path (`package.module:attr`)."""
    if ":" not in spec:
        return get_policy(spec)
    module_name, _, attr = spec.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise PolicyError(f"cannot load policy {spec!r}: {exc}") from None
    # A factory (class or zero-argument function) is called once to build the policy.
    return target() if isinstance(target, type) else target


def count_tokens(text: str) -> int:
    """Deterministic token estimate used by the offline backends (about 4 chars a token)."""
    return math.ceil(len(text) / 4)


def messages_tokens(messages: Messages) -> int:
    return sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)


def _demo_factory() -> Policy:
    from rlm_kernel.models.demo import DemoPolicy

    return DemoPolicy()


def _bench_factory() -> Policy:
    # by import path: the models layer does not import the bench; named here so that `scripted/bench` works in any
    # process (a Ray worker runs a benchmark task without the bench having registered it there)
    return load_policy("rlm_kernel.bench.offline:BenchPolicy")


_BUILTIN: dict[str, Callable[[], Policy]] = {"demo": _demo_factory, "bench": _bench_factory}
