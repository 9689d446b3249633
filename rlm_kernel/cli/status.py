"""The live status line of `rlm run` on a terminal: the run's totals and what its root is doing, redrawn in place."""

from __future__ import annotations

import threading
import time
from typing import TextIO

from rlm_kernel.core.trace import Event, Trace
from rlm_kernel.formats.progress import node_activity, run_totals

REDRAW_S = 0.1  # at most ten redraws a second, however fast events come
TICK_S = 1.0  # and one a second while nothing happens, so the elapsed time moves


class StatusLine:
    """An event handler that keeps one line of the terminal up to date; `close()` clears it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._trace = Trace()
        self._lock = threading.Lock()
        self._drawn = 0.0
        self._closed = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="rlm-status-line", daemon=True)
        self._ticker.start()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._trace.add(event)
        if time.monotonic() - self._drawn >= REDRAW_S:
            self._draw()

    def _tick(self) -> None:
        while not self._closed.wait(TICK_S):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            if self._closed.is_set() or self._trace.root is None:
                return
            now = time.time()
            running = [n for n in self._trace.walk() if n.status == "running"]
            doing = node_activity(running[-1], now) if running else ""
            line = run_totals(self._trace, now) + (f" · {running[-1].id}: {doing}" if doing else "")
            self._drawn = time.monotonic()
            self._stream.write("\r\x1b[K" + line[:200])
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            self._closed.set()
            self._stream.write("\r\x1b[K")
            self._stream.flush()
