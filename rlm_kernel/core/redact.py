"""Keeping secrets out of everything the engine writes or sends.

Values of environment variables named *_API_KEY, *_TOKEN, *_SECRET (and an
explicit api_key) are replaced wherever text leaves the engine: events (so
every trace, export and view), observations shown to the model, error messages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
_SECRET_NAME = re.compile(r"(_API_KEY|_TOKEN|_SECRET|_PASSWORD)$", re.I)
_MIN_SECRET_LENGTH = 6  # shorter values are too likely to occur by chance


class Redactor:
    def __init__(self, extra: Iterable[str | None] = ()) -> None:
        found = {v for k, v in os.environ.items() if _SECRET_NAME.search(k)}
        found.update(v for v in extra if v)
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted((s for s in found if len(s) >= _MIN_SECRET_LENGTH), key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def data(self, value: Any) -> Any:
        """`value` with every string inside it redacted (dicts, lists and tuples walked)."""
        if not self.secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.data(v) for v in value)
        return value
