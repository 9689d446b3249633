"""One run setting's declaration: its name, type, default, help and where else it can be given, and the checks
that turn a given value or a text (an environment variable, a command-line or magic option) into its type."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rlm_kernel.core.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    name: str
    type: type  # int, float, str, bool or dict
    default: Any
    help: str
    env: str | None = None  # read when the setting is not given
    cli: tuple[str, ...] = ()  # `rlm run` flags; () keeps it off the command line
    magic: tuple[str, ...] = ()  # per-cell `%%rlm` flags; () leaves it to %config RLMMagics.<name>
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    secret: bool = False  # never recorded in a trace nor shown
    flag_values: Mapping[str, Any] = field(default_factory=dict)  # flags that set a fixed value: --isolated

    @property
    def optional(self) -> bool:
        """None is a valid value (no limit, not set)."""
        return self.default is None

    def check(self, value: Any) -> Any:
        """`value` converted to the setting's type; ConfigError with a one-line reason otherwise."""
        if value is None:
            if self.optional:
                return None
            raise ConfigError(f"{self.name} must be set (default {self.default!r})")
        if self.type is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{self.name} must be True or False, not {value!r}")
            return value
        if self.type is dict:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{self.name} must be a dict, not {type(value).__name__}")
            return dict(value)
        if self.type in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{self.name} must be a number, not {value!r}")
        if self.type is int and value != int(value):
            raise ConfigError(f"{self.name} must be a whole number, not {value!r}")
        if self.type is str and not isinstance(value, str):
            raise ConfigError(f"{self.name} must be a string, not {type(value).__name__}")
        value = self.type(value)
        if self.minimum is not None and value < self.minimum:
            raise ConfigError(f"{self.name} must be at least {self.minimum:g}, not {value!r}")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{self.name} must be one of {', '.join(self.choices)}, not {value!r}")
        return value

    def parse(self, text: str) -> Any:
        """A value given as text (an environment variable, a command-line or magic option)."""
        if self.type is dict:
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{self.name} must be a JSON object: {exc.msg}") from None
            return self.check(value)
        if self.type is bool:
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ConfigError(f"{self.name} must be true or false, not {text!r}")
            return text.lower() in ("1", "true", "yes")
        if self.type in (int, float):
            try:
                number = float(text) if self.type is float else int(text)
            except ValueError:
                raise ConfigError(f"{self.name} must be a number, not {text!r}") from None
            return self.check(number)
        return self.check(text)
