"""A sandbox elsewhere is one `Worker` implementation plus one registered isolation mode (ARCHITECTURE.md):
a relay worker, standing in for a remote sandbox's client, carries every request of a run that names its mode,
through the engine's own KernelREPL, and is stopped when the run ends."""

from __future__ import annotations

import os
from typing import Any

import pytest

from rlm_kernel import RLM
from rlm_kernel.core import repl as repl_registry
from rlm_kernel.isolation import AuditKernelREPL
from rlm_kernel.isolation.worker_repl import Worker
from tests.conftest import repl

pytestmark = [pytest.mark.sandbox, pytest.mark.skipif(os.name != "posix", reason="isolation needs rlimits and signals")]


class RelayWorker:
    """A Worker that hands each request on, as a remote sandbox's client would hand it to its machine; here the
    far side is a local audit-hook worker. It keeps a log of what crossed it."""

    def __init__(self, far_side: Worker, log: list[str]) -> None:
        self._far_side = far_side
        self._log = log
        log.append("started")

    @property
    def broken(self) -> bool:
        return self._far_side.broken

    @property
    def timed_out(self) -> bool:
        return self._far_side.timed_out

    @property
    def last_streams(self) -> tuple[str, str]:
        return self._far_side.last_streams

    @property
    def seccomp(self) -> bool:
        return self._far_side.seccomp

    def request(
        self, header: dict[str, Any], blobs: list[bytes], limit: float | None, *, interrupt: bool
    ) -> tuple[str, Any]:
        self._log.append(str(header.get("op", "bind")))
        return self._far_side.request(header, blobs, limit, interrupt=interrupt)

    def exchange(self, data: bytes, limit: float | None, *, interrupt: bool, first: bool = False) -> tuple[str, Any]:
        return self._far_side.exchange(data, limit, interrupt=interrupt, first=first)

    def interrupt(self) -> None:
        self._far_side.interrupt()

    def alive(self) -> bool:
        return self._far_side.alive()

    def stop(self) -> None:
        self._log.append("stopped")
        self._far_side.stop()

    def exit_text(self) -> str:
        return self._far_side.exit_text()

    def log_tail(self) -> str:
        return self._far_side.log_tail()


LOG: list[str] = []


class RelayREPL(AuditKernelREPL):
    def _new_worker(self, config: dict[str, Any]) -> Worker:
        return RelayWorker(super()._new_worker(config), LOG)


@pytest.fixture
def relay_mode(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    LOG.clear()
    monkeypatch.setitem(repl_registry._isolations, "relay", lambda: RelayREPL)
    return LOG


def test_a_run_in_a_registered_isolation_mode_goes_through_its_worker(relay_mode, scripted):
    model = scripted([repl("import os\npid = os.getpid()\nprint(len(context))"), repl("FINAL(str(pid))")])
    result = RLM(model=model, isolation="relay").completion("x" * 42, "Where did the code run?")
    assert result.status == "done"
    assert int(result.answer) != os.getpid()  # the code ran on the worker's side, not in this process
    assert result.trace.events[-1].data["status"] == "done"
    assert relay_mode[0] == "started" and relay_mode.count("run") == 2  # both blocks crossed the relay
    assert relay_mode[-1] == "stopped"  # the run closed its REPL, and the REPL its worker
    output = next(e.data["output"] for e in result.trace.events if e.kind == "code_result")
    assert "42" in output


def test_an_unregistered_mode_is_refused_in_one_line(scripted):
    with pytest.raises(ValueError, match="unknown isolation mode 'relay'"):
        RLM(model=scripted(["x"]), isolation="relay")
