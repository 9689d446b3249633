"""Short descriptions of model-made values, shared by the engine and the isolated REPL."""

from __future__ import annotations

import re

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def describe_value(value: object) -> str:
    """`str, 1,234 chars`, `list, 3 items` or the type name; never raises, whatever the value."""
    kind = type(value).__name__
    if isinstance(value, str):
        return f"str, {len(value):,} chars"
    try:
        return f"{kind}, {len(value):,} items"  # type: ignore[arg-type]
    except Exception:  # no __len__, or one that raises: the type name says enough
        return kind


def encodable(text: str) -> str:
    """`text` as UTF-8 can carry it: a lone surrogate (from a JSON reply, a file name that is not UTF-8) becomes
    U+FFFD, so a request is never refused on this machine and retried as if the server had failed."""
    return _LONE_SURROGATE.sub("\ufffd", text)
