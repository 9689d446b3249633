"""The caller's handle on one worker process: its channel, its stray output, interrupts and death."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import time
from pathlib import Path
from typing import Any

from rlm_kernel.core.capture import BoundedText
from rlm_kernel.core.errors import IsolationError
from rlm_kernel.isolation import sandbox
from rlm_kernel.isolation.encoding import FrameReader, FrameTooLarge, dumps, pack
from rlm_kernel.isolation.tasks import TaskCap

_POLL_SECONDS = 0.1
_INTERRUPT_GRACE = 1.0  # past the deadline before the worker is interrupted (its own timer fires first)
_RESTART_GRACE = 2.0  # after an interrupt before the worker is given up and restarted
_STRAY_KEEP = 100_000  # chars of stray output (threads, C code) kept per request before the usual truncation
_CHUNK = 1 << 20


class WorkerProcess:
    """One worker (sandboxed or not) and a blocking request/reply client for it."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        sandboxed: bool,
        bridge_dir: Path,
        workdir: Path,
        tmpfs_bytes: int,
        max_reply_bytes: int,
        startup_timeout: float,
    ) -> None:
        self.sandboxed = sandboxed
        self.tasks: TaskCap | None = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = sandbox.start_worker(
                sandboxed=sandboxed,
                bridge_dir=bridge_dir,
                workdir=workdir,
                tmpfs_bytes=tmpfs_bytes,
                channel_fd=theirs.fileno(),
            )
        finally:
            theirs.close()
        self.channel = ours
        self.channel.setblocking(False)
        self._reader = FrameReader(max_reply_bytes)
        self._streams = {}
        for name, pipe in (("out", self.process.stdout), ("err", self.process.stderr)):
            assert pipe is not None
            os.set_blocking(pipe.fileno(), False)
            self._streams[pipe.fileno()] = name
        self._stderr_tail = BoundedText(2_000)  # for a start that fails
        self._next_id = 0
        self.pid: int | None = None
        self.broken = False  # a request was cut off half written: the channel is out of step
        self.timed_out = False  # whether the last request was interrupted for running past its limit
        self.last_streams = ("", "")
        status, reply = self.exchange(pack(dumps(config)), startup_timeout, interrupt=False, first=True)
        if status != "ok" or not reply.get("ready"):
            self.stop()
            why = reply if isinstance(reply, str) else status
            raise IsolationError(f"the isolated worker did not start ({why}): {self.log_tail()}")
        self.seccomp = bool(reply.get("seccomp"))
        self.pid = sandbox.worker_pid(self.process, sandboxed=sandboxed)
        if sandboxed and self.pid is not None:
            self.tasks = TaskCap(self.pid)

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_text(self) -> str:
        code = self.process.poll()
        if code is None:
            return "no exit status"
        signum = -code if code < 0 else code - 128 if self.sandboxed and code > 128 else None  # bwrap: 128 + signal
        if signum:
            try:
                return f"killed by {signal.Signals(signum).name}"
            except ValueError:
                return f"killed by signal {signum}"
        return f"exit status {code}"

    def log_tail(self) -> str:
        return self._stderr_tail.text(2_000).strip() or "(nothing on stderr)"

    def interrupt(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGINT)

    def request(
        self, header: dict[str, Any], blobs: list[bytes], limit: float | None, *, interrupt: bool
    ) -> tuple[str, Any]:
        """Send one request; ("ok", reply) or ("died" | "hung" | "failed", why)."""
        self._next_id += 1
        header = {**header, "id": self._next_id, "blobs": len(blobs)}
        data = pack(dumps(header)) + b"".join(pack(blob) for blob in blobs)
        return self.exchange(data, limit, interrupt=interrupt)

    def exchange(self, data: bytes, limit: float | None, *, interrupt: bool, first: bool = False) -> tuple[str, Any]:
        """Write `data`, then wait for the reply to it (or, `first`, any reply) within `limit` seconds."""
        wanted = None if first else self._next_id
        view, sent = memoryview(data), 0
        out, err = BoundedText(_STRAY_KEEP), BoundedText(_STRAY_KEEP)
        grace = _INTERRUPT_GRACE if interrupt else 0.0
        deadline = None if limit is None else time.monotonic() + limit + grace
        self.timed_out = False
        selector = selectors.DefaultSelector()
        selector.register(self.channel, selectors.EVENT_READ | (selectors.EVENT_WRITE if view else 0))
        for fd in self._streams:
            selector.register(fd, selectors.EVENT_READ)
        try:
            while True:
                for key, events in selector.select(_POLL_SECONDS):
                    if key.fileobj is not self.channel:
                        self._read_stream(selector, key.fd, out, err)
                        continue
                    if events & selectors.EVENT_WRITE:
                        sent += self.channel.send(view[sent : sent + _CHUNK])
                        if sent == len(view):
                            selector.modify(self.channel, selectors.EVENT_READ)
                    if events & selectors.EVENT_READ:
                        reply = self._read_reply(wanted)
                        if reply is not None:
                            return reply
                if not self.alive():
                    return "died", self._death()
                if deadline is not None and time.monotonic() >= deadline:
                    if not interrupt or self.timed_out:
                        return "hung", None
                    self.interrupt()
                    self.timed_out, deadline = True, time.monotonic() + _RESTART_GRACE
        except KeyboardInterrupt:
            self.interrupt()  # the caller's stop button stops the model's code too
            self.broken = self.broken or sent < len(view)
            raise
        except (BrokenPipeError, ConnectionError):
            return "died", self._death()
        finally:
            selector.close()
            self.last_streams = (out.text(_STRAY_KEEP), err.text(_STRAY_KEEP))

    def _read_reply(self, wanted: int | None) -> tuple[str, Any] | None:
        try:
            chunk = self.channel.recv(_CHUNK)
        except BlockingIOError:
            return None
        if not chunk:
            return "died", self._death()
        try:
            frames = self._reader.feed(chunk)
        except FrameTooLarge as exc:
            return "failed", str(exc)
        for frame in frames:
            try:
                reply = json.loads(frame)
            except (ValueError, RecursionError):  # model code can write a frame of its own, nested at will
                return "failed", "the isolated worker sent a malformed reply"
            if not isinstance(reply, dict):
                return "failed", "the isolated worker sent a malformed reply"
            if "fatal" in reply:
                return "failed", str(reply["fatal"])
            if wanted is None or reply.get("id") == wanted:  # replies to abandoned requests are skipped
                return "ok", reply
        return None

    def _read_stream(self, selector: selectors.BaseSelector, fd: int, out: BoundedText, err: BoundedText) -> None:
        try:
            chunk = os.read(fd, _CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            selector.unregister(fd)
            return
        text = chunk.decode(errors="replace")
        if self._streams[fd] == "err":
            self._stderr_tail.write(text)
        (err if self._streams[fd] == "err" else out).write(text)

    def _death(self) -> str:
        with contextlib.suppress(Exception):
            self.process.wait(timeout=2)
        return self.exit_text()

    def stop(self) -> None:
        try:  # a stop sent to this thread earlier may land in the wait: what it holds is closed all the same
            sandbox.kill(self.process, self.pid)
        finally:
            if self.tasks is not None:
                self.tasks.close()
            for pipe in (self.process.stdout, self.process.stderr):
                if pipe is not None:
                    pipe.close()
            self.channel.close()
