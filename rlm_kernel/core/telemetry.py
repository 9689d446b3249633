"""Telemetry plug-ins: each run's events, sent to an observability tool as well (OpenTelemetry spans).

Core names the place and imports no plug-in: the package root registers `otel` (rlm_kernel.telemetry),
loaded on first use. `RLM(telemetry=...)` picks one by name; without the setting, a plug-in whose
environment variable is set (OTEL_EXPORTER_OTLP_ENDPOINT) is picked; "off" picks none even then.
A plug-in is a view like any other: it reads the run's (already redacted) events and nothing else.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Protocol

from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.trace import Event, EventHandler


class Telemetry(Protocol):
    def run(self, *, parent: str | None = None, link: str | None = None) -> EventHandler:
        """A handler for one run's events. `parent`: a W3C traceparent the run's spans join (a driver's span,
        carried to a worker); `link`: one the run's own trace links to (its batch's span)."""
        ...

    def batch(self, size: int) -> AbstractContextManager[str | None]:
        """A span around a batch of `size` questions; yields its traceparent, which each question links to."""
        ...


_plugins: dict[str, tuple[Callable[[], Telemetry], str | None]] = {}
_loaded: dict[str, Telemetry] = {}
_lock = threading.Lock()
_warned: set[str] = set()


def register_telemetry(name: str, load: Callable[[], Telemetry], *, env: str | None = None) -> None:
    """`load` is called once, on first use; `env`: a variable that turns the plug-in on when set."""
    _plugins[name] = (load, env)


def telemetry_for(setting: str | None, environ: Mapping[str, str] | None = None) -> Telemetry | None:
    """The plug-in the `telemetry` setting names, else the one whose variable is set; None when off.

    A plug-in that cannot load (its extra is not installed) is a ConfigError when named, and one warning
    line, once, when only its variable asked for it: a run never fails for its telemetry.
    """
    if setting == "off":
        return None
    environ = os.environ if environ is None else environ
    name = setting or next((n for n, (_, env) in _plugins.items() if env and environ.get(env)), None)
    if name is None:
        return None
    if name not in _plugins:
        raise ConfigError(f"telemetry {name!r} is not available; known: {', '.join(sorted(_plugins)) or 'none'}")
    with _lock:
        if name not in _loaded:
            try:
                _loaded[name] = _plugins[name][0]()
            except ImportError as exc:
                if setting is not None:
                    raise ConfigError(f"telemetry={name!r} cannot load: {exc}") from None
                if name not in _warned:
                    _warned.add(name)
                    print(f"rlm_kernel: telemetry {name!r} is off: {exc}", file=sys.stderr)
                return None
        return _loaded[name]


class SpansFromEvents:
    """The spans of a batch's questions that run in other processes, made in this one from the events they send
    back (each linked to the batch's span), so that workers need no telemetry of their own and one event stream
    feeds every view. A question sent again (its worker died) starts a new trace; the spans its first attempt left
    open are never ended, so not exported."""

    def __init__(self, plugin: Telemetry, link: str | None) -> None:
        self.plugin, self.link = plugin, link
        self.runs: dict[int, EventHandler] = {}

    def __call__(self, index: int, event: Event | None) -> None:
        if event is None or index not in self.runs:  # None: the question started (again)
            self.runs[index] = self.plugin.run(link=self.link)
        if event is not None:
            self.runs[index](event)
