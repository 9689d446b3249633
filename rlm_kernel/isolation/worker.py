"""The isolated worker: runs model code for one KernelREPL, in the sandbox (or, kernel-audit, without it).

Started by `sandbox.start_worker` with one socket (its fd number is the only argument: a command line is
readable by other processes, so the configuration, bridge token included, comes as the first frame). It
applies its rlimits and seccomp filter to itself, then answers the caller's requests: frames of JSON, each request followed by the pickled
values it binds (written by the trusted caller), each reply JSON only. SIGINT is blocked except while model
code runs, so the caller's interrupt can only land in model code, never in a reply half written.
"""

from __future__ import annotations

import builtins
import inspect
import json
import math
import pickle
import resource
import signal
import socket
from collections.abc import Callable
from typing import Any

from rlm_kernel.core.answers import answer_functions
from rlm_kernel.isolation import bridge, seccomp
from rlm_kernel.isolation.encoding import decode, dumps, encode, plain, recv_frame, send_frame

_ANSWER = "answer"
_INTERRUPT = {signal.SIGINT}


def main(fd: str) -> None:
    channel = socket.socket(fileno=int(fd))
    config = json.loads(recv_frame(channel))
    for name, (soft, hard) in config["rlimits"].items():
        which = getattr(resource, name)
        ceiling = resource.getrlimit(which)[1]
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(which, (soft, hard))
    filtered = False
    if config["seccomp"] and seccomp.supported():
        seccomp.install()
        filtered = True
    signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPT)
    side = WorkerSide(config)
    send_frame(channel, dumps({"ready": True, "seccomp": filtered}))
    while True:
        try:
            header = json.loads(recv_frame(channel))
            blobs = [recv_frame(channel) for _ in range(int(header.get("blobs", 0)))]
        except (ConnectionError, OSError):
            return  # the caller closed the channel: this worker is done
        try:
            reply = dumps({"id": header.get("id"), **side.handle(header, blobs)})
        except BaseException as exc:  # model code broke what answers requests here: the caller restarts us
            reply = dumps({"id": header.get("id"), "fatal": f"{type(exc).__name__}: {exc}"[:2000]})
        send_frame(channel, reply)


class WorkerSide:
    """Binds the caller's values, runs model code, reports the namespace."""

    def __init__(self, config: dict[str, Any]) -> None:
        from rlm_kernel.core.repl import NamespaceREPL

        self.ns: dict[str, Any] = {}
        self.installed: dict[str, object] = {}
        self.config = config
        self.repl = NamespaceREPL(
            self.ns, cell_timeout=config["cell_timeout"], max_output_chars=config["max_output_chars"]
        )
        if config.get("audit_workdir"):
            from rlm_kernel.isolation.audit import install_guard

            install_guard(config["audit_workdir"])

    def handle(self, request: dict[str, Any], blobs: list[bytes]) -> dict[str, Any]:
        errors = []
        for binding in request.get("bind", []):
            try:
                self._bind(binding, blobs)
            except Exception as exc:
                errors.append([binding["name"], f"{type(exc).__name__}: {exc}"])
        op, result = request.get("op"), None
        if op == "run":
            result = self._run(request["code"], request.get("timeout"))
        elif op == "lookup" and request["name"] in self.ns:
            result = encode(self.ns[request["name"]], self.config["max_transfer_chars"], short=True)
        return {"result": result, "state": self._state(), "errors": errors}

    def _run(self, code: str, timeout: float | None) -> dict[str, Any]:
        while signal.sigtimedwait(_INTERRUPT, 0) is not None:
            pass  # an interrupt meant for a block that has already ended
        try:
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPT)
                r = self.repl.execute(code, timeout)
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPT)
        except KeyboardInterrupt:  # the caller's interrupt (past the deadline), or the code raised it itself
            return {"error": "KeyboardInterrupt", "interrupted": True}
        budget = self.config["max_transfer_chars"]
        data: dict[str, Any] = {"stdout": r.stdout, "stderr": r.stderr, "value": r.value, "error": r.error}
        if r.submitted is not None:
            try:
                data["submitted"] = {"protocol": r.submitted.protocol, **encode(r.submitted.value, budget)}
            except MemoryError:
                data["submitted"] = {"protocol": r.submitted.protocol, "repr": "<the answer was too large to send>"}
        answer = self.installed.get(_ANSWER)
        if isinstance(answer, dict) and self.ns.get(_ANSWER) is answer:
            data["answer"] = encode(self.ns[_ANSWER].get("content"), budget)
        return data

    def _state(self) -> dict[str, Any]:
        missing = object()
        ids = {n: id(v) for n, v in list(self.ns.items()) if not n.startswith("__")}
        intact = [n for n, v in self.installed.items() if self.ns.get(n, missing) is v]
        return {"ids": ids, "intact": intact}

    def _bind(self, binding: dict[str, Any], blobs: list[bytes]) -> None:
        name, kind = binding["name"], binding["kind"]
        if kind == "data":
            value = pickle.loads(blobs[binding["blob"]])  # pickled by the caller, which is trusted
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

        def made() -> dict[str, object]:
            return {n: ns[n] for n in self._state()["ids"] if n not in self.installed and not n.startswith("_")}

        function = answer_functions(ns.get, made)[name]
        function.__doc__ = doc
        return function


def _stub(name: str, doc: str, signature: str, path: str, token: str) -> Callable[..., Any]:
    """A worker-side function that calls the caller's `name` over the bridge."""

    def stub(*args: Any, **kwargs: Any) -> Any:
        if not plain([list(args), kwargs], math.inf):
            raise TypeError(f"{name}() takes plain data (str, numbers, lists, dicts) in the isolated kernel")
        reply = bridge.call(path, token, name, list(args), kwargs)
        if "error" in reply:
            error = getattr(builtins, str(reply["error"].get("type")), None)
            kind = error if isinstance(error, type) and issubclass(error, Exception) else RuntimeError
            raise kind(reply["error"].get("message"))
        return decode(reply, standin=False)

    stub.__name__ = stub.__qualname__ = name
    stub.__doc__ = doc
    try:  # help() and inspect show the caller's parameters (the text comes from the trusted caller)
        scope: dict[str, Any] = {}
        exec(f"def {name}{signature}: pass", scope)
        stub.__signature__ = inspect.signature(scope[name])  # type: ignore[attr-defined]
    except Exception:
        pass
    return stub
