"""Replaying a recorded run with no model: whole (`replay_run`, `%rlm replay`), or cell by cell (an export).

`find_export_payload` is how an export's setup cell (`%rlm_replay ID`) finds its replay data, which
lives in the notebook file's metadata: the kernel does not know which file it runs, so it asks the
frontends that say (JupyterLab and Notebook 7 set `__session__` to the notebook's path, VS Code sets
`__vsc_ipynb_file__`), then reads the notebooks in its working directory (nbclient given the notebook's
path and `nbconvert --execute` run the kernel in the notebook's folder, papermill with `--cwd`), and takes
the one that holds ID, so a renamed or copied export still replays.

`StepSession` is what an exported notebook runs. The engine replays the run on a worker thread
and hands each depth-0 block to the notebook cell that shows it, so the block runs when its cell
runs, in the notebook's namespace. The hand-off is strict: the notebook waits while the engine
works and the engine waits while a cell runs, so two threads never use the namespace at once.
Child RLMs run inside their parent's block, as in the recorded run; their cells then show what
their blocks printed.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import stat
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlm_kernel.core.aio import WAIT_SLICE_S
from rlm_kernel.core.errors import ExportError, ReplayError, RunInterrupted
from rlm_kernel.core.parsing import parse_reply
from rlm_kernel.core.repl import REPL, ExecResult, NamespaceREPL
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import Event, Trace
from rlm_kernel.formats.notebook import notebook_payload
from rlm_kernel.formats.rerun import (
    NodeMap,
    Replayed,
    recorded_history,
    recorded_settings,
    replay_context,
    replay_rlm,
    root_call,
    tools_for_replay,
)
from rlm_kernel.formats.steps import step_line
from rlm_kernel.jupyter import messages as msg
from rlm_kernel.jupyter.shell_repl import ShellREPL

# -- where an export's replay data is ---------------------------------------------------------------

# Names frontends set in the kernel's namespace to the notebook's path.
NOTEBOOK_PATH_NAMES = ("__session__", "__vsc_ipynb_file__")


def find_export_payload(payload_id: str, user_ns: dict[str, Any], from_path: str | None = None) -> Trace:
    """The recorded run under `payload_id` in the notebook file that holds it (see the module docstring).

    Only regular files are read (a FIFO named *.ipynb never blocks the setup cell); a file whose data under the
    id cannot be used (a decoy with another encoding, data that does not match its id) is skipped, and its
    error is what the cell says when no other file holds the id."""
    if from_path is not None:
        path = Path(os.path.expanduser(from_path))
        if not path.is_file():
            raise ReplayError(msg.REPLAY_FROM_MISSING.format(path=path))
        trace = _payload_in(path, payload_id)
        if trace is None:
            raise ReplayError(msg.REPLAY_DATA_NOT_IN.format(path=path, id=payload_id))
        return trace
    named = [Path(str(user_ns[name])) for name in NOTEBOOK_PATH_NAMES if user_ns.get(name)]
    unusable: ExportError | None = None
    for path in [*named, *sorted(Path.cwd().glob("*.ipynb"))]:
        try:
            trace = _payload_in(path, payload_id)
        except ExportError as error:
            unusable = unusable or error
            continue
        if trace is not None:
            return trace
    if unusable is not None:
        raise unusable
    raise ReplayError(msg.REPLAY_DATA_NOT_FOUND.format(id=payload_id, cwd=Path.cwd()))


def _payload_in(path: Path, payload_id: str) -> Trace | None:
    text = _regular_file_text(path)
    if text is None or payload_id not in text:  # most notebooks in a folder are not this export: skip parsing them
        return None
    try:
        notebook = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return notebook_payload(notebook, payload_id) if isinstance(notebook, dict) else None


def _regular_file_text(path: Path) -> str | None:
    """A regular file's UTF-8 text; None for anything else (opened without blocking: a FIFO has no writer)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with open(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        try:
            return file.read().decode("utf-8")
        except (OSError, UnicodeDecodeError):
            return None


# -- cell by cell ----------------------------------------------------------------------------------


@dataclass
class _Block:
    position: tuple[int, int]  # root iteration, block
    code: str
    timeout: float | None
    done: concurrent.futures.Future[ExecResult]


class _HandOffREPL(ShellREPL):
    """The depth-0 REPL of a stepped replay: the engine's thread asks for a block, a notebook cell runs it."""

    def __init__(self, session: StepSession, shell: Any, **kwargs: Any) -> None:
        super().__init__(shell, **kwargs)
        self._session = session

    def execute(self, code: str, timeout: float | None = None) -> ExecResult:
        return self._session.hand_over(code, timeout)

    def run_here(self, code: str, timeout: float | None) -> ExecResult:
        return super().execute(code, timeout)


class ShownCodeOnly:
    """A replay's REPL that runs only code the export shows: a recorded block's code. The engine runs the code it
    parses from the recorded replies, which an edited payload can change while every cell stays the same."""

    def __init__(self, repl: REPL, trace: Trace) -> None:
        self._repl = repl
        self._shown = recorded_blocks(trace)

    def execute(self, code: str, timeout: float | None = None) -> ExecResult:
        if code.strip() not in self._shown:
            raise ReplayError(msg.REPLAY_CODE_NOT_SHOWN)
        return self._repl.execute(code, timeout)

    def set(self, name: str, value: object) -> None:
        self._repl.set(name, value)

    def get(self, name: str, default: object = None) -> object:
        return self._repl.get(name, default)

    def names(self) -> list[str]:
        return self._repl.names()

    def snapshot(self) -> dict[str, int]:
        return self._repl.snapshot()

    def close(self) -> None:
        self._repl.close()


def recorded_blocks(trace: Trace) -> frozenset[str]:
    """The code of every recorded block: what an export's cells show."""
    return frozenset(e.data["code"].strip() for e in trace.events if e.kind == "code_result")


def shown_code_repls(trace: Trace, settings: dict[str, Any]) -> Callable[[], REPL]:
    """A replayed RLM's `repl_factory`: children's namespaces that run only the recorded blocks."""
    limits = {name: settings[name] for name in ("cell_timeout", "max_output_chars") if name in settings}
    return lambda: ShownCodeOnly(NamespaceREPL(**limits), trace)


def code_to_replay(trace: Trace) -> str:
    """Every block a whole replay of `trace` will run, as the engine parses them from the recorded replies: a
    whole replay shows this before it runs, since no cell shows its blocks."""
    shown = []
    for event in trace.events:
        if event.kind == "iteration":
            for number, block in enumerate(parse_reply(event.data["reply"]).blocks):
                where = f"{event.node_id} iteration {event.data['index']} block {number}"
                shown.append(f"# {where}\n{block.rstrip()}")
    return "\n\n".join(shown) or "# (no code)"


class StepSession:
    """An exported run replayed cell by cell (see the module docstring)."""

    def __init__(self, shell: Any, recorded: Trace, context: object = None) -> None:
        self.recorded = recorded
        root = root_call(recorded)
        value = replay_context(recorded, context)
        settings = recorded_settings(recorded)
        rlm = replay_rlm(
            recorded,
            on_event=self._on_event,
            tools=tools_for_replay(recorded, shell.user_ns),
            repl_factory=shown_code_repls(recorded, settings),
        )
        loop = rlm.config.loop
        self.repl = _HandOffREPL(self, shell, cell_timeout=loop.cell_timeout, max_output_chars=loop.max_output_chars)
        self.outputs: dict[
            tuple[str, int, int], dict[str, Any]
        ] = {}  # recorded (node, iteration, block) -> replayed code_result
        self._code = {
            (e.node_id, e.data["iteration"], e.data["index"]): e.data["code"]
            for e in recorded.events
            if e.kind == "code_result"
        }
        self._nodes = NodeMap(recorded)
        self._position = (0, 0)
        self._requests: queue.Queue[_Block | None] = queue.Queue()  # None: the run ended
        self._pending: _Block | None = None
        self._ended = False
        self._cancelled = threading.Event()
        self.result: RLMResult | None = None
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(rlm, value, root.query), name="rlm-replay", daemon=True)
        self._thread.start()
        try:
            self._wait_for_engine()
        except BaseException:  # an interrupt while the engine starts: stop it rather than leave it waiting
            self.close()
            raise

    # -- the engine's side (worker thread) --

    def _run(self, rlm: Any, context: object, query: str) -> None:
        try:
            self.result = rlm.completion(context, query, repl=self.repl, history=recorded_history(self.recorded))
        except BaseException as exc:  # the notebook reports it at its next step
            self.failure = exc
            self.result = exc.result if isinstance(exc, RunInterrupted) else None
        finally:
            self._requests.put(None)

    def hand_over(self, code: str, timeout: float | None) -> ExecResult:
        block = _Block(self._position, code, timeout, concurrent.futures.Future())
        self._requests.put(block)
        while True:
            try:
                return block.done.result(timeout=WAIT_SLICE_S)
            except concurrent.futures.TimeoutError:
                if self._cancelled.is_set():
                    raise KeyboardInterrupt from None

    def _on_event(self, event: Event) -> None:
        node_id = self._nodes.recorded_id(event)
        if event.kind == "code_result" and node_id is not None:
            self.outputs[(node_id, event.data["iteration"], event.data["index"])] = event.data
        if event.parent_id is None and event.kind == "iteration":
            self._position = (event.data["index"], 0)
        elif event.parent_id is None and event.kind == "code_result":
            self._position = (event.data["iteration"], event.data["index"] + 1)

    # -- the notebook's side (the cells' thread) --

    def _wait_for_engine(self) -> None:
        """Until the engine hands over its next depth-0 block or the run ends (a kernel interrupt stops the wait)."""
        while self._pending is None and not self._ended:
            try:
                item = self._requests.get(timeout=WAIT_SLICE_S)
            except queue.Empty:
                continue
            if item is None:
                self._ended = True
            else:
                self._pending = item

    def step(self, node_id: str, iteration: int, index: int, code: str) -> dict[str, Any]:
        """Run one depth-0 block, or find a child's block; returns its replayed code_result."""
        key = (node_id, iteration, index)
        if key not in self._code:
            raise ReplayError(f"the recording has no block {index + 1} in iteration {iteration + 1} of {node_id}")
        if code.strip() != self._code[key].strip():
            raise ReplayError("this cell's code is not the recorded block's: a replay runs the recorded code only")
        if node_id == self.recorded.root_id and key not in self.outputs:
            self._run_block(iteration, index, code)
        if key not in self.outputs:
            raise ReplayError(
                f"{node_id} iteration {iteration + 1} block {index + 1} has not run in this replay: it runs inside its "
                "parent's block, so run the cells above first" + self._state()
            )
        return self.outputs[key]

    def _run_block(self, iteration: int, index: int, code: str) -> None:
        self._wait_for_engine()
        block = self._pending
        if block is None:
            raise ReplayError("the replayed run has ended before this block" + self._state())
        if block.position != (iteration, index):
            raise ReplayError(f"the replay is waiting for the cell {self._cell_of(block)}: run the cells in order")
        self._pending = None
        if block.code.strip() != code.strip():  # the cell shows one code and the replayed reply holds another
            refused = ReplayError(msg.REPLAY_CODE_NOT_SHOWN)
            block.done.set_exception(refused)
            raise refused
        try:
            result = self.repl.run_here(block.code, block.timeout)
        except BaseException as exc:  # an interrupt: the engine's run ends as interrupted
            block.done.set_exception(exc)
            raise
        block.done.set_result(result)
        self._wait_for_engine()  # the engine records the block and makes its next call meanwhile

    def _cell_of(self, block: _Block) -> str:
        return step_line(self.recorded.root_id or "", *block.position)

    def _state(self) -> str:
        if self.failure is not None:
            return f" (the replay stopped: {self.failure})"
        if self.result is not None and self.result.status != "done":
            return f" (the replay ended with status {self.result.status}: {self.result.error})"
        return ""

    def finish(self) -> Replayed:
        """Wait for the end of the run and put back the names the engine set in the namespace."""
        self._wait_for_engine()
        if self._pending is not None:
            raise ReplayError(
                f"the replay is waiting for the cell {self._cell_of(self._pending)}: run the cells above first"
            )
        self._thread.join()
        self.repl.restore()
        if self.result is None:
            raise ReplayError(f"the replay failed: {self.failure!r}")
        return Replayed(self.result, root_call(self.recorded))

    def close(self) -> None:
        """Stop the replay (a new one replaces it) and put back the names the engine set."""
        self._cancelled.set()  # the engine's thread, waiting for a cell, stops as interrupted
        self._thread.join(timeout=5)
        self.repl.restore()


# -- outputs inside a cell ------------------------------------------------------------------------


class ReplayedError(Exception):
    """A recorded error raised again, so that the cell shows it as the recorded run did."""

    traceback_lines: list[str] = []

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of its own traceback
        return self.traceback_lines


class _Value:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.data


def show_outputs(outputs: list[dict[str, Any]]) -> Any:
    """Produce notebook outputs from inside a cell: streams written, the value returned, the error raised."""
    value = None
    for output in outputs:
        kind = output["output_type"]
        if kind == "stream":
            stream = sys.stdout if output["name"] == "stdout" else sys.stderr
            stream.write(output["text"])
            stream.flush()  # keeps stdout before stderr, as recorded
        elif kind == "execute_result":
            value = _Value(output["data"])
        else:
            # Named as the recorded exception, so the cell's error output reads the same.
            raise type(output["ename"], (ReplayedError,), {"traceback_lines": output["traceback"]})(output["evalue"])
    return value
