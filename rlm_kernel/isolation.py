"""Isolated execution: model code runs in its own resource-limited Jupyter kernel (`RLM(isolation="kernel")`).

`KernelREPL` implements the engine's REPL protocol over a separate ipykernel
process started with jupyter_client, so model code never runs in the caller's
process: it cannot read or change the notebook's variables, and only the
answer, the observations and the trace come back.

How it is contained (defence in depth, not a sandbox):

- rlimits, applied by a small launcher before it execs the kernel: address
  space (`memory_limit`: an allocation past it raises MemoryError, or the kernel
  dies and is restarted), CPU seconds over the kernel's life (`cpu_seconds`:
  SIGXCPU kills it, and it is restarted), the size of any file written
  (`file_size_limit`), no core files.
- a `sys.addaudithook` guard installed in the kernel before any model code: it
  raises PermissionError when Python code opens a file for writing, creates,
  deletes, renames, links, truncates or changes the metadata of a path outside
  the kernel's working directory (a fresh temporary directory, removed on
  close), opens a directory outside it (a `dir_fd` there would let relative
  paths escape), starts a process (fork, exec, spawn, system, subprocess),
  signals another process, or loads a C library or looks up a C function
  through ctypes.
- a scrubbed environment: no API keys or other variables of the caller; HOME
  and TMPDIR point into the working directory.

What it does not do: an audit hook only sees Python-level calls, so C code
(ctypes memory tricks, C extensions that write files or start processes
themselves) can get past it, and the kernel runs as the same OS user with that
user's read access to files and with network access. RLIMIT_NPROC is not used:
it counts every process and thread of the user and root ignores it; the audit
hook blocks process creation instead.

The engine's functions reach the kernel three ways: plain data (the context,
the `answer` dict) is pickled by the parent into a file that the kernel loads;
`FINAL`, `FINAL_VAR`, `SHOW_VARS` and peek/grep/partition are re-created inside
the kernel (over its own copy of the context); every other callable
(llm_query, rlm_query, ...) becomes a stub that calls back to the parent over an
HTTP bridge on 127.0.0.1 with a random bearer token. Everything that comes back
from the kernel is JSON, never a pickle: model code is untrusted.

Each KernelREPL costs a kernel start (about 1 to 2 seconds); the engine gives
every node its own and closes it when the node ends.
"""

from __future__ import annotations

import builtins
import contextlib
import hmac
import http.client
import inspect
import json
import math
import os
import pickle
import queue
import re
import reprlib
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rlm_kernel.core.capture import BoundedText, truncate
from rlm_kernel.core.errors import ConfigError, SubmitAnswer
from rlm_kernel.core.repl import ExecResult

GiB = 1024**3
MiB = 1024**2

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
_ANSWER = "answer"  # the engine's answer dict: its content is mirrored back so a partial answer survives
_NATIVE = {"FINAL", "FINAL_VAR", "SHOW_VARS"}  # raise or read the namespace, so they must run in the kernel
_HELPERS = {"peek", "grep", "partition"}
_POLL_SECONDS = 0.1
_INTERRUPT_GRACE = 1.0  # past the deadline before the kernel is interrupted (its own timer fires first)
_RESTART_GRACE = 2.0  # after an interrupt before the kernel is given up and restarted
_OP_TIMEOUT = 60.0  # bookkeeping requests (state, lookups) answer in milliseconds unless the kernel is stuck
_MAX_BRIDGE_BODY = 256 * MiB
_IOPUB_KEEP = 100_000  # chars of stray output (threads, C code) kept per request before the usual truncation
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_KEEP_ENV = ("PATH", "LANG", "LANGUAGE", "TZ")
_RESTARTED = "The isolated kernel was restarted: every variable you made is gone; `context` and the functions are back."

# Applies the rlimits, then becomes the kernel (exec keeps the pid jupyter_client tracks). A separate
# launcher rather than Popen(preexec_fn=...): preexec_fn is unsafe in a process with threads.
_LAUNCHER = """\
import json, os, resource, sys
for name, wanted in json.loads(sys.argv[1]).items():
    which = getattr(resource, name)
    hard = resource.getrlimit(which)[1]
    soft, new_hard = (min(v, hard) if hard != resource.RLIM_INFINITY else v for v in wanted)
    resource.setrlimit(which, (soft, new_hard))
os.execv(sys.argv[2], sys.argv[2:])
"""


class KernelREPL:
    """The REPL protocol over a separate, limited ipykernel (see the module docstring).

    `memory_limit` and `file_size_limit` are bytes, `cpu_seconds` is CPU time over
    the kernel's life (None: unlimited). `get()` brings back values that are JSON
    data of up to `max_transfer_chars`; anything else comes back as a stand-in
    that has the value's type name, length and (shortened) repr.
    """

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
        if os.name != "posix":
            raise RuntimeError("isolation='kernel' needs a POSIX system (it relies on rlimits and signals)")
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
        }
        self._limits_text = ", ".join(
            part
            for part in (
                memory_limit and f"memory_limit={_size(memory_limit)}",
                cpu_seconds and f"cpu_seconds={cpu_seconds:g}",
            )
            if part
        )
        self._values: dict[str, object] = {}  # what set() was given, by name: get() returns these while intact
        self._bindings: dict[str, dict[str, Any]] = {}  # how each name is bound in the kernel, replayed on restart
        self._pending: list[str] = []  # names set since the last request
        self._ids: dict[str, int] = {}  # the kernel's names and identities as of the last request
        self._intact: set[str] = set()  # names still bound to what set() put there
        self._notice: str | None = None  # a restart the model has not been told about yet
        self._lock = threading.Lock()
        self._dir = Path(tempfile.mkdtemp(prefix="rlm-isolated-"))
        self.workdir = self._dir / "work"
        self.workdir.mkdir()
        self._bridge = _Bridge({})
        self._kernel: _Kernel | None = None
        # The finalizer must not reference self: it gets a holder that _start keeps current across restarts.
        self._resources = _Resources(self._dir, self._bridge)
        self._finalizer = weakref.finalize(self, _shutdown, self._resources)
        try:
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
        assert self._kernel is not None
        if status == "restarted":  # data says why
            result.error = data
        elif data["result"].get("interrupted") and self._kernel.timed_out:
            why = f"cell_timeout={self.cell_timeout:g}s" if limit == self.cell_timeout else "the run's time budget"
            result.error = (
                f"TimeoutError: this code ran past {why}, ignored the timeout and was stopped by an interrupt. "
                "Variables assigned before that point are kept."
            )
        else:
            self._fill(result, data["result"])
            if notice:  # the kernel had died since the last block
                result.stderr = f"[{notice}]\n{result.stderr}"
        result.seconds = time.perf_counter() - started
        return result

    def set(self, name: str, value: object) -> None:
        """Bind `name` in the kernel: data is pickled in, callables become kernel-side functions or bridge stubs."""
        binding = self._binding(name, value)
        self._values[name], self._bindings[name] = value, binding
        self._pending.append(name)
        if binding["kind"] == "data":
            self._flush()  # now, so that a value the kernel cannot load fails here and not later

    def get(self, name: str, default: object = None) -> object:
        if name in self._pending or name in self._intact:
            return self._values[name]
        status, data = self._request({"op": "lookup", "name": name})
        if status != "ok" or name not in self._ids or not isinstance(data["result"], dict):
            return default
        return _decode(data["result"], standin=True)

    def names(self) -> list[str]:
        self._flush()
        return list(self._ids)

    def snapshot(self) -> dict[str, int]:
        self._flush()
        return dict(self._ids)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill the kernel, stop the bridge and remove the working directory. Safe to call twice."""
        self._finalizer()

    def __enter__(self) -> KernelREPL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def bridge_url(self) -> str:
        return self._bridge.url

    # -- talking to the kernel ---------------------------------------------------------------------

    def _start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV or k.startswith("LC_")}
        env.update(
            HOME=str(self.workdir),
            TMPDIR=str(self.workdir),
            IPYTHONDIR=str(self._dir / "ipython"),
            PYTHONPATH=_PACKAGE_ROOT,
            PYTHONDONTWRITEBYTECODE="1",
            # Fewer malloc arenas and BLAS threads keep the address space (what RLIMIT_AS counts) small.
            MALLOC_ARENA_MAX="2",
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            JUPYTER_PLATFORM_DIRS="1",
        )
        self._kernel = self._resources.kernel = _Kernel(
            self._dir, self.workdir, env, self._rlimits, self.startup_timeout
        )
        boot = {
            "workdir": str(self.workdir),
            "bridge": self._bridge.url,
            "token": self._bridge.token,
            "cell_timeout": self.cell_timeout,
            "max_output_chars": self.max_output_chars,
            "max_transfer_chars": self.max_transfer_chars,
        }
        self._pending = list(self._bindings)
        for name in self._pending:  # a restart re-sends the current values
            if self._bindings[name]["kind"] == "data":
                self._bindings[name] = self._binding(name, self._values[name])
        status, data = self._send({"boot": boot}, _OP_TIMEOUT, interrupt=False)
        if status != "ok":
            raise RuntimeError(f"the isolated kernel did not start: {data}\n{self._kernel.log_tail()}")

    def _restart(self, why: str) -> str:
        assert self._kernel is not None
        self._kernel.stop()
        self._start()
        self._notice = f"{why} {_RESTARTED}"
        return self._notice

    def _flush(self) -> None:
        if self._pending:
            self._request({})

    def _request(self, request: dict[str, Any], limit: float | None = None) -> tuple[str, Any]:
        """One round trip, restarting the kernel if it died or hung: ("ok", reply) or (status, why)."""
        run = request.get("op") == "run"
        assert self._kernel is not None
        if not self._kernel.alive():
            self._restart(f"The isolated kernel had died ({self._kernel.exit_text()}).")
        status, data = self._send(request, limit if run else _OP_TIMEOUT, interrupt=run)
        if status == "died":
            why = f"The isolated kernel died while running this ({data}): did it hit {self._limits_text or 'a limit'}?"
            return "restarted", self._restart(why)
        if status == "hung":
            return "restarted", self._restart("The code ignored the timeout and the interrupt.")
        if status == "failed":  # the code broke what answers requests inside the kernel (builtins, the runtime)
            return "restarted", self._restart(f"The isolated kernel stopped answering properly ({data}).")
        return status, data

    def _send(self, request: dict[str, Any], limit: float | None, *, interrupt: bool) -> tuple[str, Any]:
        """Send one request (with any pending bindings) and wait for its reply, within `limit` seconds."""
        assert self._kernel is not None
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("the isolated kernel is busy with another request (a bridge call cannot use the REPL)")
        try:
            names, self._pending = self._pending, []
            request = {**request, "bind": [self._bindings[n] for n in names]}
            expression = f"__import__('rlm_kernel.isolation', fromlist=['_'])._handle({json.dumps(request)!r})"
            status, content = self._kernel.evaluate(expression, limit, interrupt=interrupt)
            for name in names:
                if self._bindings[name]["kind"] == "data":
                    Path(self._bindings[name]["path"]).unlink(missing_ok=True)
        finally:
            self._lock.release()
        if status != "ok":
            return status, content
        try:
            reply = json.loads(content)
            self._ids = {str(k): int(v) for k, v in reply["state"]["ids"].items()}
            self._intact = {str(n) for n in reply["state"]["intact"]} & set(self._values)
            if request.get("op") == "run" and not isinstance(reply["result"], dict):
                raise TypeError("no result for the block")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return "failed", f"the isolated kernel sent a malformed reply ({exc!r})"
        if reply.get("errors"):
            failed = {str(name): str(why) for name, why in reply["errors"]}
            for name in failed:  # not bound: forget them, or every restart would fail on them again
                self._values.pop(name, None)
                self._bindings.pop(name, None)
            raise TypeError(
                "could not send values into the isolated kernel: " + "; ".join(f"{n!r}: {w}" for n, w in failed.items())
            )
        return "ok", reply

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
            doc = inspect.getdoc(value) or ""
            return {"name": name, "kind": "stub", "doc": doc, "signature": signature}
        path = self._dir / f"value-{secrets.token_hex(8)}.pickle"
        try:
            path.write_bytes(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        except Exception as exc:
            raise TypeError(f"{name!r} cannot be sent into the isolated kernel: {exc}") from None
        return {"name": name, "kind": "data", "path": str(path)}

    def _fill(self, result: ExecResult, data: dict[str, Any]) -> None:
        assert self._kernel is not None
        out, err = self._kernel.last_streams
        result.stdout = truncate(str(data.get("stdout") or "") + out, self.max_output_chars)
        result.stderr = truncate(str(data.get("stderr") or "") + err, self.max_output_chars)
        result.value, result.error = (None if data.get(k) is None else str(data[k]) for k in ("value", "error"))
        submitted = data.get("submitted")
        if submitted:
            result.submitted = SubmitAnswer(_decode(submitted, standin=False), str(submitted.get("protocol")))
        answer = self._values.get(_ANSWER)
        if _ANSWER in data and isinstance(answer, dict) and _ANSWER in self._intact:
            # dict.__setitem__: the engine's AnswerDict would submit on a ready key; content never does.
            dict.__setitem__(answer, "content", _decode(data["answer"], standin=False))


class _Kernel:
    """One kernel process under the rlimits, and a blocking client for it."""

    def __init__(
        self, directory: Path, workdir: Path, env: dict[str, str], rlimits: dict[str, list[int]], startup_timeout: float
    ) -> None:
        from jupyter_client import KernelManager  # only isolated runs need jupyter_client

        class LimitedKernelManager(KernelManager):
            def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
                # This interpreter's ipykernel whatever kernelspecs are installed, behind the launcher.
                return [
                    sys.executable,
                    "-I",
                    "-c",
                    _LAUNCHER,
                    json.dumps(rlimits),
                    sys.executable,
                    "-m",
                    "ipykernel_launcher",
                    "-f",
                    os.path.realpath(self.connection_file),
                    "--HistoryManager.enabled=False",
                    *(extra_arguments or []),
                ]

        self._log_path = directory / "kernel.log"
        self.km = LimitedKernelManager(kernel_name="python3", connection_file=str(directory / "kernel.json"))
        self.kc: Any = None
        self.last_streams = ("", "")  # stdout and stderr the last request sent over iopub (threads, C code)
        self.timed_out = False  # whether the last request was interrupted for running past its limit
        try:
            with open(self._log_path, "ab") as log:  # the kernel's own stdout/stderr, kept off the caller's terminal
                self.km.start_kernel(cwd=str(workdir), env=env, stdout=log, stderr=log)
            self.kc = self.km.client()
            self.kc.start_channels()
            self.kc.wait_for_ready(timeout=startup_timeout)
        except BaseException as exc:
            tail = self.log_tail()
            self.stop()
            if isinstance(exc, Exception):
                raise RuntimeError(f"the isolated kernel did not start: {exc}\n{tail}") from None
            raise

    # Popen.poll and killpg directly, not the manager's async-wrapped calls: these also run while an
    # interrupt is being handled, and a KeyboardInterrupt can land inside an event loop run.
    def alive(self) -> bool:
        process = getattr(self.km.provisioner, "process", None)
        return process is not None and process.poll() is None

    def interrupt(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # ipykernel's interrupt_mode is "signal"; the local provisioner knows the kernel's process group
            os.killpg(self.km.provisioner.pgid, signal.SIGINT)  # type: ignore[union-attr]

    def exit_text(self) -> str:
        process = getattr(self.km.provisioner, "process", None)
        code = None if process is None else process.poll()
        if code is None:
            return "no exit status"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def log_tail(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def evaluate(self, expression: str, limit: float | None, *, interrupt: bool) -> tuple[str, str]:
        """Evaluate `expression` in the kernel; ("ok", its JSON text) or ("died"|"hung"|"failed", why).

        Past `limit` seconds the kernel is interrupted (if `interrupt`) and given a grace period; then it is "hung".
        """
        msg_id = self.kc.execute(
            "",
            silent=True,
            store_history=False,
            user_expressions={"r": expression},
            allow_stdin=False,
            stop_on_error=False,
        )
        try:
            status, content = self._wait(msg_id, limit, interrupt)
        except KeyboardInterrupt:
            self.interrupt()  # the caller's stop button stops the model's code too
            raise
        self.last_streams = self._drain_iopub(msg_id, wait=status == "reply")
        if status != "reply":
            return status, content
        if content.get("status") != "ok":
            return "failed", _error_text(content)
        value = (content.get("user_expressions") or {}).get("r") or {}
        if value.get("status") != "ok":
            return "failed", _error_text(value)
        try:
            return "ok", value["data"]["application/json"]["p"]
        except (KeyError, TypeError):
            return "failed", "the isolated kernel sent a malformed reply"

    def _wait(self, msg_id: str, limit: float | None, interrupt: bool) -> tuple[str, Any]:
        deadline = None if limit is None else time.monotonic() + limit + (_INTERRUPT_GRACE if interrupt else 0)
        self.timed_out = False
        while True:
            try:
                msg = self.kc.get_shell_msg(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self.alive():
                    return "died", self.exit_text()
                if deadline is not None and time.monotonic() >= deadline:
                    if not interrupt or self.timed_out:
                        return "hung", None
                    self.interrupt()
                    self.timed_out, deadline = True, time.monotonic() + _RESTART_GRACE
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:  # replies to abandoned requests are skipped
                return "reply", msg.get("content") or {}

    def _drain_iopub(self, msg_id: str, *, wait: bool) -> tuple[str, str]:
        out, err = BoundedText(_IOPUB_KEEP), BoundedText(_IOPUB_KEEP)
        end = time.monotonic() + (1.0 if wait else 0.0)
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                break
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            content = msg.get("content") or {}
            if msg.get("msg_type") == "stream":
                (out if content.get("name") == "stdout" else err).write(_ANSI.sub("", str(content.get("text", ""))))
            elif msg.get("msg_type") == "status" and content.get("execution_state") == "idle":
                break
        return out.text(_IOPUB_KEEP), err.text(_IOPUB_KEEP)

    def stop(self) -> None:
        if self.kc is not None:
            self.kc.stop_channels()
        if self.km.has_kernel:
            self.km.shutdown_kernel(
                now=True
            )  # SIGKILL, and cleans up: the kernel holds nothing worth a polite shutdown
        else:
            self.km.cleanup_resources()


class _Resources:
    """What must be released when a KernelREPL is closed or collected."""

    def __init__(self, directory: Path, bridge: _Bridge) -> None:
        self.directory, self.bridge = directory, bridge
        self.kernel: _Kernel | None = None


def _shutdown(resources: _Resources) -> None:
    try:
        if resources.kernel is not None:
            resources.kernel.stop()
    finally:
        resources.bridge.close()
        shutil.rmtree(resources.directory, ignore_errors=True)


def _error_text(content: dict[str, Any]) -> str:
    lines = content.get("traceback") or [f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"]
    return _ANSI.sub("", "\n".join(map(str, lines)))


def _size(n: int) -> str:
    return f"{n / GiB:g} GiB" if n >= GiB else f"{n / MiB:g} MiB"


# -- the bridge: the parent's functions, called from the kernel -------------------------------------


class _Bridge:
    """A localhost HTTP server calling the parent's functions for the kernel's stubs: JSON in, JSON out."""

    def __init__(self, functions: dict[str, Callable[..., Any]]) -> None:
        self.functions = functions
        self.token = secrets.token_urlsafe(32)
        bridge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                status, reply = bridge.serve(self.path, self.headers.get("Authorization", ""), self)
                body = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # a request log on stderr is noise in a notebook
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval: close() waits for the serving loop to notice the shutdown.
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="rlm-bridge", daemon=True).start()

    def serve(self, path: str, authorization: str, request: BaseHTTPRequestHandler) -> tuple[int, dict[str, Any]]:
        if not hmac.compare_digest(authorization.encode(), f"Bearer {self.token}".encode()):
            return 403, {"error": {"type": "PermissionError", "message": "bad or missing token"}}
        try:
            length = int(request.headers.get("Content-Length", "0"))
            if path != "/call" or not 0 < length <= _MAX_BRIDGE_BODY:
                raise ValueError("expected POST /call with a JSON body")
            call = json.loads(request.rfile.read(length))
            name, args, kwargs = str(call["name"]), list(call.get("args", [])), dict(call.get("kwargs", {}))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            return 400, {"error": {"type": "ValueError", "message": f"bad bridge request: {exc!r}"}}
        function = self.functions.get(name)
        if function is None:
            return 404, {"error": {"type": "NameError", "message": f"the bridge has no function {name!r}"}}
        try:
            return 200, _encode(function(*args, **kwargs), None)
        except BaseException as exc:  # the kernel gets the error; an interrupt is handled by the waiting thread
            return 200, {"error": {"type": type(exc).__name__, "message": str(exc)}}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- values across the boundary: JSON, or a description --------------------------------------------

_short_repr = reprlib.Repr()
_short_repr.maxstring = _short_repr.maxother = 2_000
_short_repr.maxlist = _short_repr.maxtuple = _short_repr.maxdict = _short_repr.maxset = 50


def _plain(value: object, budget: float) -> bool:
    """Whether `value` is JSON data (str, numbers, None, lists, tuples, str-keyed dicts) of about `budget` chars at most."""
    left = [budget]

    def walk(v: object, depth: int) -> bool:
        if depth > 200:
            return False
        if v is None or isinstance(v, (bool, float)) or (isinstance(v, int) and v.bit_length() < 10_000):
            left[0] -= 8
        elif isinstance(v, str):
            left[0] -= len(v) + 2
        elif isinstance(v, (list, tuple)):
            left[0] -= 2
            if not all(walk(x, depth + 1) for x in v):
                return False
        elif isinstance(v, dict):
            left[0] -= 2
            if not all(isinstance(k, str) and walk(k, depth + 1) and walk(x, depth + 1) for k, x in v.items()):
                return False
        else:
            return False
        return left[0] >= 0

    return walk(value, 0)


def _encode(value: object, budget: int | None, *, short: bool = False) -> dict[str, Any]:
    """{"json": value} for plain data within `budget` chars, else {"repr", "type", "len"} describing it."""
    try:
        if _plain(value, math.inf if budget is None else budget):
            return {"json": value}
    except (RecursionError, MemoryError):
        pass
    try:
        length: int | None = len(value)  # type: ignore[arg-type]
    except Exception:
        length = None
    try:
        text = _short_repr.repr(value) if short else repr(value)
    except Exception as exc:
        text = f"<{type(value).__name__} object; repr failed: {exc!r}>"
    return {"repr": text if budget is None else truncate(text, budget), "type": type(value).__name__, "len": length}


def _decode(data: dict[str, Any], *, standin: bool) -> object:
    if "json" in data:
        return data["json"]
    if not standin:
        return str(data.get("repr"))
    length = data.get("len")
    known = isinstance(length, int) and not isinstance(length, bool) and length >= 0
    return _standin_class(str(data.get("type")))(str(data.get("repr")), length if known else None)


class RemoteValue:
    """Stands for a kernel value that was too large, or not JSON data, to bring back: its type name, len and repr."""

    def __init__(self, text: str, length: int | None) -> None:
        self._text, self._length = text, length

    def __repr__(self) -> str:
        return self._text

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError(f"object of type '{type(self).__name__}' has no len()")
        return self._length


_standin_classes: dict[str, type[RemoteValue]] = {}


def _standin_class(type_name: str) -> type[RemoteValue]:
    # Named after the kernel value's type, so `type(v).__name__` describes it as the engine expects.
    type_name = re.sub(r"\W", "_", type_name)[:100] or "object"  # the name comes from the untrusted kernel
    if type_name not in _standin_classes:
        _standin_classes[type_name] = type(type_name, (RemoteValue,), {"__module__": "rlm_kernel.isolation.remote"})
    return _standin_classes[type_name]


# -- inside the kernel ------------------------------------------------------------------------------

_SIDE: _KernelSide | None = None


class _Reply:
    """A request's result, shown to IPython as application/json (ASCII JSON text: nothing for its packer to trip on)."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self._text = json.dumps(payload)

    def _repr_json_(self) -> dict[str, str]:
        return {"p": self._text}


def _handle(text: str) -> _Reply:
    """The kernel's entry point for every request from the parent."""
    global _SIDE
    request = json.loads(text)
    if "boot" in request:
        _SIDE = _KernelSide(request["boot"])
    assert _SIDE is not None
    return _Reply(_SIDE.handle(request))


class _KernelSide:
    """Runs in the kernel: binds the parent's values, runs model code, reports the namespace."""

    def __init__(self, config: dict[str, Any]) -> None:
        from IPython import get_ipython

        from rlm_kernel.core.repl import NamespaceREPL

        shell = get_ipython()
        self.ns: dict[str, Any] = shell.user_ns
        self.hidden: dict[str, Any] = shell.user_ns_hidden
        self.installed: dict[str, object] = {}
        self.config = config
        self.repl = NamespaceREPL(
            self.ns, cell_timeout=config["cell_timeout"], max_output_chars=config["max_output_chars"]
        )
        _install_guard(config["workdir"])

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        errors = []
        for binding in request.get("bind", []):
            try:
                self._bind(binding)
            except Exception as exc:
                errors.append([binding["name"], f"{type(exc).__name__}: {exc}"])
        op, result = request.get("op"), None
        if op == "run":
            result = self._run(request["code"], request.get("timeout"))
        elif op == "lookup" and request["name"] in self.ns:
            result = _encode(self.ns[request["name"]], self.config["max_transfer_chars"], short=True)
        return {"result": result, "state": self._state(), "errors": errors}

    def _run(self, code: str, timeout: float | None) -> dict[str, Any]:
        try:
            r = self.repl.execute(code, timeout)
        except KeyboardInterrupt:  # the parent's interrupt (past the deadline), or the code raised it itself
            return {"error": "KeyboardInterrupt", "interrupted": True}
        data: dict[str, Any] = {"stdout": r.stdout, "stderr": r.stderr, "value": r.value, "error": r.error}
        if r.submitted is not None:
            try:
                data["submitted"] = {"protocol": r.submitted.protocol, **_encode(r.submitted.value, None)}
            except MemoryError:
                data["submitted"] = {
                    "protocol": r.submitted.protocol,
                    "repr": "<the answer was too large to send back>",
                }
        answer, ns = self.installed.get(_ANSWER), self.ns
        if isinstance(answer, dict) and ns is not None and ns.get(_ANSWER) is answer:
            data["answer"] = _encode(answer.get("content"), self.config["max_transfer_chars"])  # type: ignore[union-attr]
        return data

    def _state(self) -> dict[str, Any]:
        missing = object()
        ids = {
            n: id(v)
            for n, v in list(self.ns.items())
            if not n.startswith("__") and not (n in self.hidden and self.hidden[n] is v)
        }
        intact = [n for n, v in self.installed.items() if self.ns.get(n, missing) is v]
        return {"ids": ids, "intact": intact}

    def _bind(self, binding: dict[str, Any]) -> None:
        name, kind = binding["name"], binding["kind"]
        if kind == "data":
            with open(binding["path"], "rb") as f:
                value = pickle.load(f)  # written by the parent, which is trusted
        elif kind == "helper":
            from rlm_kernel.core.helpers import make_helpers

            value = make_helpers(self.ns["context"])[name]
        elif kind == "native":
            value = self._native(name, binding["doc"])
        else:
            value = _stub(name, binding["doc"], binding["signature"], self.config["bridge"], self.config["token"])
        self.ns[name] = self.installed[name] = value

    def _native(self, name: str, doc: str) -> Callable[..., Any]:
        ns = self.ns

        def FINAL(value: Any) -> None:  # noqa: N802 - the protocol's names
            raise SubmitAnswer(value, "FINAL")

        def FINAL_VAR(name: Any) -> None:  # noqa: N802
            if not isinstance(name, str):
                raise SubmitAnswer(name, "FINAL_VAR")
            if name not in ns:
                raise NameError(
                    f"FINAL_VAR: there is no variable named {name!r}; assign it first, or submit a value with FINAL(value)"
                )
            raise SubmitAnswer(ns[name], "FINAL_VAR")

        def SHOW_VARS() -> str:  # noqa: N802
            from rlm_kernel.core.values import describe_value

            names = [n for n in self._state()["ids"] if n not in self.installed and not n.startswith("_")]
            return "\n".join(f"{n}: {describe_value(ns[n])}" for n in sorted(names)) or "(no variables yet)"

        functions: dict[str, Callable[..., Any]] = {"FINAL": FINAL, "FINAL_VAR": FINAL_VAR, "SHOW_VARS": SHOW_VARS}
        function = functions[name]
        function.__doc__ = doc
        return function


def _stub(name: str, doc: str, signature: str, url: str, token: str) -> Callable[..., Any]:
    """A kernel-side function that calls the parent's `name` over the bridge."""
    port = int(url.rsplit(":", 1)[1])

    def stub(*args: Any, **kwargs: Any) -> Any:
        call = {"name": name, "args": list(args), "kwargs": kwargs}
        if not _plain(call, math.inf):
            raise TypeError(f"{name}() takes plain data (str, numbers, lists, dicts) in the isolated kernel")
        connection = http.client.HTTPConnection("127.0.0.1", port)  # no proxies: the bridge is local
        try:
            connection.request(
                "POST",
                "/call",
                json.dumps(call),
                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            reply = json.loads(connection.getresponse().read())
        finally:
            connection.close()
        if "error" in reply:
            error = getattr(builtins, str(reply["error"].get("type")), None)
            kind = error if isinstance(error, type) and issubclass(error, Exception) else RuntimeError
            raise kind(reply["error"].get("message"))
        return _decode(reply, standin=False)

    stub.__name__ = stub.__qualname__ = name
    stub.__doc__ = doc
    try:  # help() and inspect show the parent function's parameters (the text comes from the trusted parent)
        scope: dict[str, Any] = {}
        exec(f"def {name}{signature}: pass", scope)
        stub.__signature__ = inspect.signature(scope[name])  # type: ignore[attr-defined]
    except Exception:
        pass
    return stub


# -- the guard: an audit hook against writes outside the working directory and new processes -----------

_PATH_EVENTS: dict[str, tuple[int, ...]] = {  # event -> positions of path arguments that must stay inside
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.rename": (0, 1),
    "os.link": (0, 1),
    "os.symlink": (1,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.chflags": (0,),
    "os.truncate": (0,),
    "os.utime": (0,),
    "os.setxattr": (0,),
    "os.removexattr": (0,),
    "shutil.rmtree": (0,),
    "shutil.chown": (0,),
    "shutil.copyfile": (1,),
    "shutil.copymode": (1,),
    "shutil.copystat": (1,),
    "shutil.copytree": (1,),
    "shutil.move": (0, 1),
    "shutil.make_archive": (0,),
    "shutil.unpack_archive": (1,),
    "sqlite3.connect": (0,),
}
_PROCESS_EVENTS = frozenset(
    {
        "os.fork",
        "os.forkpty",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.startfile",
        "subprocess.Popen",
    }
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _install_guard(workdir: str) -> None:
    """Install the audit hook; from here on, code in this process cannot remove it."""
    root = os.path.realpath(workdir)
    own_pid, own_group = os.getpid(), os.getpgid(0)

    def inside(path: object) -> bool:
        if isinstance(path, int):  # a file descriptor: the file it names
            try:
                path = os.readlink(f"/proc/self/fd/{path}")
            except OSError:
                return False
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False
        text = os.fsdecode(os.fspath(path))
        if text in (os.devnull, "", ":memory:"):
            return True
        if text.startswith("file:"):  # an sqlite URI
            return False
        real = os.path.realpath(text)  # follows symlinks: a link inside pointing out is outside
        return real == root or real.startswith(root + os.sep)

    def deny(what: str, rule: str = f"it may only write inside its working directory {root}") -> None:
        raise PermissionError(f"isolated kernel: {what} is not allowed; {rule}")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):  # wrapping a descriptor opened earlier (and checked then)
                return
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
            if (writes or (mode is None and os.path.isdir(path))) and not inside(path):
                deny(
                    f"opening {os.fsdecode(os.fspath(path))!r} for writing" if writes else f"opening directory {path!r}"
                )
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if i < len(args) and not inside(args[i]):
                    deny(f"{event} on {args[i]!r}")
        elif event in _PROCESS_EVENTS:
            deny(f"starting a process ({event})", "use threads, or do the work in Python")
        elif event == "os.kill" and args[0] not in (own_pid, 0):
            deny(f"signalling process {args[0]}", "it may only signal itself")
        elif event == "os.killpg" and args[0] != own_group:
            deny(f"signalling process group {args[0]}", "it may only signal itself")
        elif event in ("ctypes.dlopen", "ctypes.dlsym/handle") or (
            event == "ctypes.dlsym" and not str(args[-1]).lstrip("_").startswith("Py")
        ):
            deny(f"reaching C functions through ctypes ({event})", "ctypes could get around these checks")

    sys.addaudithook(hook)


def repl_factory(mode: str) -> Callable[..., KernelREPL]:
    """The REPL class of an isolation mode (`RLM(isolation=mode)`)."""
    if mode != "kernel":
        raise ConfigError(f"isolation mode {mode!r} is not available in this version")
    return KernelREPL
