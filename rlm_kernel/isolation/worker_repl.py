"""KernelREPL: the engine's REPL protocol over an isolated worker process (see the package docstring)."""

from __future__ import annotations

import inspect
import math
import os
import pickle
import shutil
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Protocol

from rlm_kernel.core.capture import truncate
from rlm_kernel.core.errors import IsolationError, SubmitAnswer
from rlm_kernel.core.repl import ExecResult
from rlm_kernel.isolation import sandbox
from rlm_kernel.isolation.bridge import Bridge
from rlm_kernel.isolation.encoding import decode
from rlm_kernel.isolation.process import WorkerProcess
from rlm_kernel.isolation.tasks import MAX_TASKS

GiB = 1024**3
MiB = 1024**2

_ANSWER = "answer"  # the engine's answer dict: its content is mirrored back so a partial answer survives
_NATIVE = {"FINAL", "FINAL_VAR", "SHOW_VARS"}  # raise or read the namespace, so they must run in the worker
_HELPERS = {"peek", "grep", "partition"}
_OP_TIMEOUT = 60.0  # bookkeeping requests (state, lookups) answer in milliseconds unless the worker is stuck
_RESTARTED = "The isolated kernel was restarted: every variable you made is gone; `context` and the functions are back."


class Worker(Protocol):
    """The worker process behind a KernelREPL, as the REPL uses it. A sandbox elsewhere (a container, another
    machine) is one implementation of this, returned by a KernelREPL subclass's `_new_worker`, plus one
    `register_isolation` mode; `worker.py` is what runs on the other side."""

    broken: bool  # a request was cut off half written: the channel is out of step, restart
    timed_out: bool  # the last request was interrupted for running past its limit
    last_streams: tuple[str, str]  # what the worker wrote to stdout and stderr outside a reply, during the last one
    seccomp: bool

    def request(
        self, header: dict[str, Any], blobs: list[bytes], limit: float | None, *, interrupt: bool
    ) -> tuple[str, Any]:
        """Send one request and its pickled values; ("ok", reply) or ("died" | "hung" | "failed", why)."""
        ...

    def exchange(self, data: bytes, limit: float | None, *, interrupt: bool, first: bool = False) -> tuple[str, Any]:
        """Write framed `data`, then wait for the reply within `limit` seconds (interrupting once past it)."""
        ...

    def interrupt(self) -> None: ...

    def alive(self) -> bool: ...

    def stop(self) -> None:
        """Kill the worker and release its channel (again is harmless)."""
        ...

    def exit_text(self) -> str: ...

    def log_tail(self) -> str: ...


class KernelREPL:
    """The REPL protocol over a separate, limited worker process, in an OS sandbox (`isolation="kernel"`).

    `memory_limit` and `file_size_limit` are bytes (the file-size limit also caps the sandbox's private
    tmpfs), `cpu_seconds` is CPU time over the worker's life (None: unlimited). `get()` brings back values
    that are JSON data of up to `max_transfer_chars`; anything else comes back as a stand-in that has the
    value's type name, length and (shortened) repr. The answer crosses under the same limit.
    """

    sandboxed = True

    def __init__(
        self,
        *,
        cell_timeout: float | None = None,
        max_output_chars: int = 10_000,
        memory_limit: int | None = 2 * GiB,
        cpu_seconds: float | None = 600.0,
        file_size_limit: int | None = 1 * GiB,
        max_transfer_chars: int = 4_000_000,
        startup_timeout: float = 60.0,
    ) -> None:
        if self.sandboxed:
            sandbox.require_sandbox()
        elif os.name != "posix":
            raise IsolationError("isolation='kernel-audit' needs a POSIX system (it relies on rlimits and signals)")
        self.cell_timeout = cell_timeout
        self.max_output_chars = max_output_chars
        self.max_transfer_chars = max_transfer_chars
        self.startup_timeout = startup_timeout
        self._rlimits = {
            "RLIMIT_CORE": [0, 0],
            **({"RLIMIT_AS": [memory_limit, memory_limit]} if memory_limit else {}),
            # SIGXCPU at the soft limit (reported as a CPU-limit death), SIGKILL shortly after.
            **({"RLIMIT_CPU": [math.ceil(cpu_seconds), math.ceil(cpu_seconds) + 2]} if cpu_seconds else {}),
            **({"RLIMIT_FSIZE": [file_size_limit, file_size_limit]} if file_size_limit else {}),
            # Only in the sandbox's own user namespace does it count the worker's tasks alone (outside, all the
            # user's processes); it binds a caller that is not root on the host (the pids cgroup binds root).
            **({"RLIMIT_NPROC": [MAX_TASKS, MAX_TASKS]} if self.sandboxed else {}),
        }
        self._tmpfs_bytes = file_size_limit or 1 * GiB
        self._limits_text = ", ".join(
            part
            for part in (
                memory_limit and f"memory_limit={_size(memory_limit)}",
                cpu_seconds and f"cpu_seconds={cpu_seconds:g}",
            )
            if part
        )
        # JSON escapes take up to 6 bytes a char: the answer, the answer dict and two outputs, with room to spare.
        self._max_reply_bytes = 6 * (2 * max_transfer_chars + 4 * max_output_chars) + 1 * MiB
        self._values: dict[str, object] = {}  # what set() was given, by name: get() returns these while intact
        self._bindings: dict[str, dict[str, Any]] = {}  # how each name is bound in the worker, replayed on restart
        self._pending: list[str] = []  # names set since the last request
        self._ids: dict[str, int] = {}  # the worker's names and identities as of the last request
        self._intact: set[str] = set()  # names still bound to what set() put there
        self._notice: str | None = None  # a restart the model has not been told about yet
        self._lock = threading.Lock()
        # Private to this run (mkdtemp makes it 0700): the bridge socket, and in kernel-audit the working directory.
        self._dir = Path(tempfile.mkdtemp(prefix="rlm-run-"))
        self.workdir = self._dir / "work"  # kernel-audit only; the sandbox works in its own tmpfs
        self._worker: Worker | None = None
        # The finalizer must not reference self: it gets a holder that _start keeps current across restarts.
        # It exists before the bridge does, so a stop landing in a node whose REPL is starting leaks nothing.
        self._resources = _Resources(self._dir)
        self._finalizer = weakref.finalize(self, _shutdown, self._resources)
        try:
            self.workdir.mkdir()
            self._resources.bridge = self._bridge = Bridge(self._dir / "bridge")
            self._start()
        except BaseException:
            self.close()
            raise

    # -- the REPL protocol --------------------------------------------------------------------

    def execute(self, code: str, timeout: float | None = None) -> ExecResult:
        started = time.perf_counter()
        limit = min((t for t in (self.cell_timeout, timeout) if t is not None), default=None)
        result = ExecResult()
        status, data = self._request({"op": "run", "code": code, "timeout": timeout}, limit)
        notice, self._notice = self._notice, None
        assert self._worker is not None
        if status == "restarted":  # data says why
            result.error = data
        elif data["result"].get("interrupted") and self._worker.timed_out:
            why = f"cell_timeout={self.cell_timeout:g}s" if limit == self.cell_timeout else "the run's time budget"
            result.error = (
                f"TimeoutError: this code ran past {why}, ignored the timeout and was stopped by an interrupt. "
                "Variables assigned before that point are kept."
            )
        else:
            self._fill(result, data["result"])
            if notice:  # the worker had died since the last block
                result.stderr = f"[{notice}]\n{result.stderr}"
        result.seconds = time.perf_counter() - started
        return result

    def set(self, name: str, value: object) -> None:
        """Bind `name` in the worker: data is pickled in, callables become worker-side functions or bridge stubs."""
        binding = self._binding(name, value)
        self._values[name], self._bindings[name] = value, binding
        self._pending.append(name)
        if binding["kind"] == "data":
            self._flush()  # now, so that a value the worker cannot load fails here and not later

    def get(self, name: str, default: object = None) -> object:
        if name in self._pending or name in self._intact:
            return self._values[name]
        status, data = self._request({"op": "lookup", "name": name})
        if status != "ok" or name not in self._ids or not isinstance(data["result"], dict):
            return default
        return decode(data["result"], standin=True)

    def names(self) -> list[str]:
        self._flush()
        return list(self._ids)

    def snapshot(self) -> dict[str, int]:
        self._flush()
        return dict(self._ids)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill the worker, stop the bridge and remove the run's directory. Safe to call twice."""
        self._finalizer()

    def __enter__(self) -> KernelREPL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def seccomp(self) -> bool:
        """Whether the worker runs under the seccomp filter (x86_64 Linux)."""
        return self._worker is not None and self._worker.seccomp

    # -- talking to the worker ---------------------------------------------------------------------

    def _start(self) -> None:
        config = {
            "rlimits": self._rlimits,
            "seccomp": True,
            "bridge": f"{sandbox.SANDBOX_BRIDGE_DIR}/bridge" if self.sandboxed else str(self._bridge.path),
            "token": self._bridge.token,
            "audit_workdir": None if self.sandboxed else str(self.workdir),
            "cell_timeout": self.cell_timeout,
            "max_output_chars": self.max_output_chars,
            "max_transfer_chars": self.max_transfer_chars,
        }
        self._resources.worker = self._worker = self._new_worker(config)
        self._pending = list(self._bindings)  # a restart re-sends the current values
        status, data = self._send({}, _OP_TIMEOUT, interrupt=False)
        if status != "ok":
            raise IsolationError(f"the isolated worker did not take its values: {data}\n{self._worker.log_tail()}")

    def _new_worker(self, config: dict[str, Any]) -> Worker:
        """A started worker that has been sent `config` (worker.py's first frame): here, a local process."""
        return WorkerProcess(
            config,
            sandboxed=self.sandboxed,
            bridge_dir=self._dir,
            workdir=self.workdir,
            tmpfs_bytes=self._tmpfs_bytes,
            max_reply_bytes=self._max_reply_bytes,
            startup_timeout=self.startup_timeout,
        )

    def _restart(self, why: str) -> str:
        assert self._worker is not None
        self._worker.stop()
        self._start()
        self._notice = f"{why} {_RESTARTED}"
        return self._notice

    def _flush(self) -> None:
        if self._pending:
            self._request({})

    def _request(self, request: dict[str, Any], limit: float | None = None) -> tuple[str, Any]:
        """One round trip, restarting the worker if it died or hung: ("ok", reply) or (status, why)."""
        run = request.get("op") == "run"
        assert self._worker is not None
        if self._worker.broken:
            self._restart("The isolated kernel was interrupted in the middle of a request.")
        elif not self._worker.alive():
            self._restart(f"The isolated kernel had died ({self._worker.exit_text()}).")
        status, data = self._send(request, limit if run else _OP_TIMEOUT, interrupt=run)
        if status == "died":
            why = f"The isolated kernel died while running this ({data}): did it hit {self._limits_text or 'a limit'}?"
            return "restarted", self._restart(why)
        if status == "hung":
            return "restarted", self._restart("The code ignored the timeout and the interrupt.")
        if status == "failed":  # the code broke what answers requests inside the worker (builtins, the runtime)
            return "restarted", self._restart(f"The isolated kernel stopped answering properly ({data}).")
        return status, data

    def _send(self, request: dict[str, Any], limit: float | None, *, interrupt: bool) -> tuple[str, Any]:
        """Send one request (with any pending bindings) and wait for its reply, within `limit` seconds."""
        assert self._worker is not None
        if not self._lock.acquire(blocking=False):
            raise IsolationError("the isolated kernel is busy with another request (a bridge call cannot use the REPL)")
        try:
            names, self._pending = self._pending, []
            blobs: list[bytes] = []
            bindings: list[dict[str, Any]] = []
            for name in names:
                binding = dict(self._bindings[name])
                if binding["kind"] == "data":
                    binding["blob"] = len(blobs)
                    blobs.append(self._pickle(name))
                bindings.append(binding)
            status, reply = self._worker.request({**request, "bind": bindings}, blobs, limit, interrupt=interrupt)
        finally:
            self._lock.release()
        if status != "ok":
            return status, reply
        try:
            self._ids = {str(k): int(v) for k, v in reply["state"]["ids"].items()}
            self._intact = {str(n) for n in reply["state"]["intact"]} & set(self._values)
            if request.get("op") == "run" and not isinstance(reply["result"], dict):
                raise TypeError("no result for the block")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return "failed", f"the isolated worker sent a malformed reply ({exc!r})"
        if reply.get("errors"):
            failed = {str(name): str(why) for name, why in reply["errors"]}
            for name in failed:  # not bound: forget them, or every restart would fail on them again
                self._values.pop(name, None)
                self._bindings.pop(name, None)
            raise TypeError(
                "could not send values into the isolated kernel: " + "; ".join(f"{n!r}: {w}" for n, w in failed.items())
            )
        return "ok", reply

    def _pickle(self, name: str) -> bytes:
        try:
            return pickle.dumps(self._values[name], protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            self._values.pop(name, None)
            self._bindings.pop(name, None)
            raise TypeError(f"{name!r} cannot be sent into the isolated kernel: {exc}") from None

    def _binding(self, name: str, value: object) -> dict[str, Any]:
        self._bridge.functions.pop(name, None)  # only names bound to stubs can be called over the bridge
        if callable(value) and name in _NATIVE:
            return {"name": name, "kind": "native", "doc": inspect.getdoc(value) or ""}
        if callable(value) and name in _HELPERS and getattr(value, "__module__", "") == "rlm_kernel.core.context":
            return {"name": name, "kind": "helper"}
        if callable(value):
            self._bridge.functions[name] = value
            try:
                signature = str(inspect.signature(value))
            except (TypeError, ValueError):
                signature = "(*args, **kwargs)"
            return {"name": name, "kind": "stub", "doc": inspect.getdoc(value) or "", "signature": signature}
        try:
            pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"{name!r} cannot be sent into the isolated kernel: {exc}") from None
        return {"name": name, "kind": "data"}

    def _fill(self, result: ExecResult, data: dict[str, Any]) -> None:
        assert self._worker is not None
        out, err = self._worker.last_streams
        result.stdout = truncate(str(data.get("stdout") or "") + out, self.max_output_chars)
        result.stderr = truncate(str(data.get("stderr") or "") + err, self.max_output_chars)
        result.value, result.error = (None if data.get(k) is None else str(data[k]) for k in ("value", "error"))
        submitted = data.get("submitted")
        if submitted:
            result.submitted = SubmitAnswer(decode(submitted, standin=False), str(submitted.get("protocol")))
        answer = self._values.get(_ANSWER)
        if _ANSWER in data and isinstance(answer, dict) and _ANSWER in self._intact:
            # dict.__setitem__: the engine's AnswerDict would submit on a ready key; content never does.
            dict.__setitem__(answer, "content", decode(data["answer"], standin=False))


class AuditKernelREPL(KernelREPL):
    """`isolation="kernel-audit"`: the same worker without the OS sandbox, fenced by an audit hook (weaker)."""

    sandboxed = False


class _Resources:
    """What must be released when a KernelREPL is closed or collected."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.bridge: Bridge | None = None
        self.worker: Worker | None = None


def _shutdown(resources: _Resources) -> None:
    try:
        if resources.worker is not None:
            resources.worker.stop()
    finally:
        try:
            if resources.bridge is not None:
                resources.bridge.close()
        finally:
            shutil.rmtree(resources.directory, ignore_errors=True)


def _size(n: int) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"
