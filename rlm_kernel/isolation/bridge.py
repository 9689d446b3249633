"""The bridge: the caller's functions (llm_query, rlm_query, ...) called from the isolated worker.

A Unix socket in the run's private directory (mode 0700; inside the sandbox it is the only thing of the
caller's that the worker can reach). One call per connection: a frame of JSON {token, name, args, kwargs}
in, a frame of JSON out. What a misbehaving worker can cost the caller is bounded: a request over
`max_request_bytes` is refused before it is read; at most `max_connections` connections are served at once
(one thread each, plus the accepting thread), the rest wait in the socket's backlog; a connection that sends
nothing for `idle_seconds` is closed; requests being read or served hold at most `max_inflight_bytes`
between them. The token only opens this socket, and this socket only calls the functions the engine bound,
which charge every model call to the run's ledger.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import os
import secrets
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlm_kernel.core.deadlines import Deadline
from rlm_kernel.isolation.encoding import (
    FrameTooLarge,
    dumps,
    encode,
    frame_length,
    recv_exactly,
    recv_frame,
    send_frame,
)

MiB = 1024**2


class Bridge:
    def __init__(
        self,
        path: Path,
        *,
        max_request_bytes: int = 16 * MiB,
        max_connections: int = 16,
        max_inflight_bytes: int = 64 * MiB,
        idle_seconds: float = 10.0,
    ) -> None:
        self.functions: dict[str, Callable[..., Any]] = {}
        self.token = secrets.token_urlsafe(32)
        self.path = path
        self.max_request_bytes, self.idle_seconds = max_request_bytes, idle_seconds
        self._max_inflight = max_inflight_bytes
        self._inflight = 0
        self._inflight_changed = threading.Condition()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._closed = threading.Event()
        self._calls: set[Deadline] = set()  # the calls being served, each stopped when the bridge closes
        self._calls_lock = threading.Lock()
        self._connections: set[socket.socket] = set()  # accepted and not yet done: closed with the bridge
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._accepting = threading.Thread(target=self._accept, name="rlm-bridge", daemon=True)
        try:  # a stop that lands here (a node cancelled while its REPL starts) must not leak the socket
            _bind(self._listener, path)
            self._listener.listen(max_connections)
            self._listener.settimeout(0.1)  # accept() wakes to notice close()
            self._accepting.start()
        except BaseException:
            self._closed.set()
            self._listener.close()
            raise

    def close(self) -> None:
        """Stop accepting, and stop the calls still running (a tool that hangs must not outlive the run)."""
        self._closed.set()
        try:  # a stop sent to this thread earlier may land in the join: the sockets are closed all the same
            with self._calls_lock:
                for running in self._calls:
                    running.stop()
            if self._accepting.is_alive():
                self._accepting.join(5)
        finally:
            self._listener.close()
            with self._calls_lock:
                # A call stopped while its tool blocks in C code still holds its connection: close it now, so no
                # socket of this run outlives it (its reply, if it ever comes, finds the connection closed).
                for connection in self._connections:
                    with contextlib.suppress(OSError):
                        connection.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            if not self._slots.acquire(timeout=0.1):
                continue  # every slot busy: new connections wait in the backlog
            try:
                connection, _ = self._listener.accept()
            except (TimeoutError, OSError):
                self._slots.release()
                continue
            with self._calls_lock:
                self._connections.add(connection)
            threading.Thread(target=self._serve, args=(connection,), name="rlm-bridge-call", daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        held = 0
        try:
            with connection:
                try:  # close() may have closed the connection already: a run that ended as it was accepted
                    connection.settimeout(self.idle_seconds)
                    length = frame_length(recv_exactly(connection, 8))
                    if length > self.max_request_bytes:
                        raise FrameTooLarge(
                            f"a bridge request of {length:,} bytes is over the limit of {self.max_request_bytes:,}"
                        )
                    held = self._hold(length)
                    reply = self._call(recv_exactly(connection, length))
                except FrameTooLarge as exc:
                    reply = _error("ValueError", str(exc))
                except (OSError, ConnectionError):
                    return  # the worker went away or sent nothing in time
                with contextlib.suppress(OSError):
                    send_frame(connection, dumps(reply))
        finally:
            with self._calls_lock:
                self._connections.discard(connection)
            self._release(held)
            self._slots.release()

    def _call(self, body: bytes) -> dict[str, Any]:
        try:
            call = json.loads(body)
            token, name = str(call["token"]), str(call["name"])
            args, kwargs = list(call.get("args", [])), dict(call.get("kwargs", {}))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            return _error("ValueError", f"bad bridge request: {exc!r}")
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return _error("PermissionError", "bad or missing bridge token")
        function = self.functions.get(name)
        if function is None:
            return _error("NameError", f"the bridge has no function {name!r}")
        running = Deadline(math.inf)  # stopped only by close(): a stop lands in pure-Python code, as in process
        with self._calls_lock:
            if self._closed.is_set():
                return _error("RuntimeError", "the run has ended")
            self._calls.add(running)
        try:
            with running:
                value = function(*args, **kwargs)
            return encode(value, None)
        except BaseException as exc:  # the worker gets the error; an interrupt is handled by the waiting thread
            return _error(type(exc).__name__, str(exc))
        finally:
            with self._calls_lock:
                self._calls.discard(running)

    def _hold(self, length: int) -> int:
        with self._inflight_changed:
            # One request may always go (alone); otherwise wait until the bytes in flight leave room for it.
            while self._inflight and self._inflight + length > self._max_inflight:
                if not self._inflight_changed.wait(self.idle_seconds):
                    raise TimeoutError("the bridge is busy")
            self._inflight += length
        return length

    def _release(self, held: int) -> None:
        if held:
            with self._inflight_changed:
                self._inflight -= held
                self._inflight_changed.notify_all()


def _bind(listener: socket.socket, path: Path) -> None:
    """Bind at `path`, on Linux by a name that goes through a descriptor of its folder: a peer's getpeername()
    returns the name as bound, and the folder's own would tell the sandbox where the host keeps its runs."""
    if sys.platform != "linux":
        listener.bind(str(path))
        return
    folder = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        listener.bind(f"/proc/self/fd/{folder}/{path.name}")
    finally:
        os.close(folder)


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


def call(path: str, token: str, name: str, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The worker's side of one call (used by its stubs)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(path)
        send_frame(connection, dumps({"token": token, "name": name, "args": args, "kwargs": kwargs}))
        reply = json.loads(recv_frame(connection))
    return reply if isinstance(reply, dict) else _error("RuntimeError", "the bridge sent a malformed reply")
