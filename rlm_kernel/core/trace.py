"""Events and the call tree they build.

The engine emits events; every view (the trace kept on the result, the JSONL
file, the notebook widget, the CLI outline) consumes the same stream.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rlm_kernel.core.errors import TraceError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.legacy import upgrade_events
from rlm_kernel.core.redact import Redactor

# Version of the events' fields, in every call_start. 2: the root records the run's settings, sub-calls
# their iteration and block, code results stdout, stderr, value and error apart. 1 (no field) is upgraded.
EVENT_SCHEMA = 2
# Not an engine event: the context itself, written into a trace file only when asked (see JSONLWriter).
CONTEXT_RECORD = "context"


def prompt_sha256(prompt: str) -> str:
    """The hash a sub-call's prompt is recorded and replayed by (lone surrogates included)."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Event:
    kind: str
    node_id: str
    parent_id: str | None
    data: dict[str, Any]
    time: float = field(default_factory=time.time)

    def to_json(self) -> str:
        # Not dataclasses.asdict: it deep-copies `data` first, which costs more than the encoding.
        fields = {
            "kind": self.kind,
            "node_id": self.node_id,
            "parent_id": self.parent_id,
            "data": self.data,
            "time": self.time,
        }
        return json.dumps(fields, default=str, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Event:
        return cls(**json.loads(line))


EventHandler = Callable[[Event], None]


@dataclass
class CodeCell:
    iteration: int
    index: int
    code: str
    output: str  # what the model saw (abridged): stdout, stderr, value and error in one text
    error: str | None
    seconds: float
    stdout: str = ""
    stderr: str = ""
    value: str | None = None  # the trailing expression's display
    created: list[str] = field(default_factory=list)
    rebound: list[str] = field(default_factory=list)
    submitted: bool = False


@dataclass
class Iteration:
    index: int
    reply: str
    usage: Usage
    seconds: float
    cells: list[CodeCell] = field(default_factory=list)
    blocks: int = 0  # code blocks in the reply (cells: those that ran so far)


@dataclass
class SubCall:
    id: str
    kind: str  # "llm" or "rlm"
    model: str
    prompt_preview: str
    prompt_chars: int
    child_id: str | None = None
    iteration: int | None = None  # the parent's code block that started it
    block: int | None = None
    reply: str | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)
    seconds: float = 0.0
    done: bool = False
    attempts: int = 0  # requests sent for it (its model_wait events; a legacy trace has none)


@dataclass
class CallNode:
    id: str
    parent_id: str | None
    depth: int
    model: str
    query: str
    context: dict[str, Any]
    status: str = "running"
    answer: str | None = None
    error: str | None = None
    seconds: float = 0.0
    iterations: list[Iteration] = field(default_factory=list)
    subcalls: list[SubCall] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)  # this node's own calls, its sub-model calls included
    started: float = 0.0  # wall-clock time of its call_start
    waiting: dict[str, Any] | None = None  # the model_wait of the model call in flight, until its reply
    streaming: str = ""  # the reply being written (model_text deltas), until the iteration event has it whole
    sent: int = 0  # requests of its own model call sent and counted (model_wait events) before its reply


class Trace:
    """The call tree of one run, built from its events (thread-safe)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.nodes: dict[str, CallNode] = {}
        self.root_id: str | None = None
        self.contexts: dict[str, dict[str, Any]] = {}  # node id -> its context record: sha256, and value or why omitted
        self._started_as: dict[str, int] = {}  # child node id -> its place among its parent's sub-calls
        self._subcalls: dict[tuple[str, str], SubCall] = {}  # (node id, sub-call id): found at once in a fan-out
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # A result travels between processes (a batch's executor): its trace without the lock.
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> Trace:
        """A trace from recorded events; events of an older schema are upgraded first."""
        trace = cls()
        for event in upgrade_events(list(events)):
            trace.add(event)
        return trace

    @classmethod
    def from_jsonl(cls, path: str | Path) -> Trace:
        with open(path, encoding="utf-8") as f:
            return cls.from_lines(f.read().split("\n"))

    @classmethod
    def from_lines(cls, lines: list[str]) -> Trace:
        """A trace from JSONL lines; a last line cut short (the writer died mid-line) is left out.

        A file the writer appended several runs to holds the last one (each run numbers its nodes from n0);
        `runs_from_jsonl` gives every one.
        """
        return cls._runs(lines)[-1]

    @classmethod
    def runs_from_jsonl(cls, path: str | Path) -> list[Trace]:
        """Every run of a JSONL file, in the order they were appended (one for a file of one run)."""
        with open(path, encoding="utf-8") as f:
            return cls._runs(f.read().split("\n"))

    @classmethod
    def _runs(cls, lines: list[str]) -> list[Trace]:
        events = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                events.append(Event.from_json(line))
            except json.JSONDecodeError as exc:
                if any(rest.strip() for rest in lines[number:]):
                    raise TraceError(f"line {number} is not JSON ({exc.msg}): not an rlm_kernel trace") from None
            except (TypeError, KeyError):
                raise TraceError(f"line {number} is not an event: not an rlm_kernel trace") from None
        roots = [i for i, e in enumerate(events) if e.kind == "call_start" and e.parent_id is None]
        if not roots:
            return [cls.from_events(events)]
        # Events before the first root (a context record) belong to it.
        starts = [0, *roots[1:]]
        return [cls.from_events(events[a:b]) for a, b in zip(starts, [*roots[1:], len(events)])]

    @property
    def root(self) -> CallNode | None:
        return self.nodes.get(self.root_id) if self.root_id else None

    def root_start(self) -> dict[str, Any]:
        """The root's call_start data (its settings, prompts, tools, session history); {} without a root."""
        start = next((e for e in self.events if e.kind == "call_start" and e.node_id == self.root_id), None)
        return start.data if start is not None and self.root_id else {}

    def walk(self, node_id: str | None = None) -> Iterable[CallNode]:
        """Nodes depth-first from `node_id` (default: the root)."""
        start = node_id or self.root_id
        if start is None:
            return
        stack = [start]
        while stack:
            node = self.nodes[stack.pop()]
            yield node
            stack.extend(reversed(node.children))

    def add(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
            getattr(self, f"_on_{event.kind}")(event)

    def _on_call_start(self, e: Event) -> None:
        d = e.data
        node = CallNode(e.node_id, e.parent_id, d["depth"], d["model"], d["query"], d["context"], started=e.time)
        self.nodes[e.node_id] = node
        if e.parent_id is None:
            self.root_id = e.node_id
        elif e.parent_id in self.nodes:
            # In the order the parent started them (its own events), not the order the children's events arrive in.
            bisect.insort(self.nodes[e.parent_id].children, e.node_id, key=lambda c: self._started_as.get(c, 0))

    def _on_iteration(self, e: Event) -> None:
        d = e.data
        usage = Usage(**d["usage"])
        node = self.nodes[e.node_id]
        node.iterations.append(Iteration(d["index"], d["reply"], usage, d["seconds"], blocks=d.get("blocks", 0)))
        node.usage.add(_calls_counted(usage, node.sent))
        node.waiting, node.streaming, node.sent = None, "", 0

    def _on_model_wait(self, e: Event) -> None:
        """One request sent: a model call counts then, as the ledger counts it, whether or not a reply comes."""
        node = self.nodes[e.node_id]
        node.usage.llm_calls += 1
        subcall_id = e.data.get("subcall_id")
        if subcall_id is not None:  # an attempt of an llm_query sub-call
            sub = self._subcalls.get((e.node_id, subcall_id))
            if sub is not None:
                sub.attempts += 1
            return
        node.sent += 1
        node.waiting, node.streaming = e.data, ""  # a retry starts its reply again

    def _on_model_text(self, e: Event) -> None:
        """A piece of a reply being written, for live views; the iteration event carries the whole reply."""
        self.nodes[e.node_id].streaming += e.data["text"]

    def _on_code_result(self, e: Event) -> None:
        d = e.data
        names = ("iteration", "index", "code", "output", "error", "seconds", "created", "rebound", "submitted")
        fields = {k: d[k] for k in (*names, "stdout", "stderr", "value")}
        node = self.nodes[e.node_id]
        target = next((it for it in reversed(node.iterations) if it.index == d["iteration"]), None)
        if target is not None:
            target.cells.append(CodeCell(**fields))

    def _on_subcall_start(self, e: Event) -> None:
        d = e.data
        sub = SubCall(d["subcall_id"], d["kind"], d["model"], d["prompt_preview"], d["prompt_chars"], d.get("child_id"))
        sub.iteration, sub.block = d["iteration"], d["block"]
        subcalls = self.nodes[e.node_id].subcalls
        if sub.child_id is not None:
            self._started_as[sub.child_id] = len(subcalls)
        subcalls.append(sub)
        self._subcalls[e.node_id, sub.id] = sub

    def _on_subcall_end(self, e: Event) -> None:
        d = e.data
        node = self.nodes[e.node_id]
        sub = self._subcalls[e.node_id, d["subcall_id"]]
        sub.reply, sub.error, sub.seconds, sub.done = d.get("reply"), d.get("error"), d["seconds"], True
        sub.usage = Usage(**d["usage"])
        if sub.kind == "llm":
            node.usage.add(_calls_counted(sub.usage, sub.attempts))
            sub.usage.llm_calls = max(sub.usage.llm_calls, sub.attempts)

    def _on_call_end(self, e: Event) -> None:
        d = e.data
        node = self.nodes[e.node_id]
        node.status, node.answer, node.error, node.seconds = d["status"], d.get("answer"), d.get("error"), d["seconds"]
        node.waiting, node.streaming = None, ""

    def _on_context(self, e: Event) -> None:
        self.contexts[e.node_id] = e.data

    def subtree_usage(self, node_id: str) -> Usage:
        total = Usage()
        for node in self.walk(node_id):
            total.add(node.usage)
        return total

    def outline(self, width: int = 100) -> str:
        """The tree as indented text: one line a node, with its usage and status."""
        lines = []
        for node in self.walk():
            u = self.subtree_usage(node.id)
            cost = f"${u.cost_usd:.4f}" if u.cost_known else "cost unknown"
            question = " ".join(node.query.split())
            head = f"{'  ' * node.depth}[{node.status}] {node.id} d{node.depth} {node.model}"
            stats = f"{len(node.iterations)} it, {u.calls_text()}, {u.input_tokens:,}+{u.output_tokens:,} tok, {cost}, {node.seconds:.2f}s"
            room = max(20, width - len(head) - len(stats) - 6)
            lines.append(f"{head}: {question[:room]}{'…' if len(question) > room else ''} ({stats})")
        return "\n".join(lines)


def _calls_counted(usage: Usage, sent: int) -> Usage:
    """A reply's usage less the calls its model_wait events already counted (a trace from before them has none)."""
    if not sent:
        return usage
    return Usage(**{**usage.to_dict(), "llm_calls": 0})  # type: ignore[arg-type]


def context_record(node_id: str, sha256: str, context: object) -> Event:
    """The context itself as a trace record, or the reason it is left out (not JSON, or it holds a secret)."""
    try:
        text = json.dumps(context, ensure_ascii=False)
    except (TypeError, ValueError):
        return Event(
            CONTEXT_RECORD,
            node_id,
            None,
            {"sha256": sha256, "omitted": f"a {type(context).__name__} context is not JSON"},
        )
    # Redacting would make it another context (its hash and the prompts built from it change): leave it out instead.
    if Redactor().text(text) != text:
        return Event(
            CONTEXT_RECORD, node_id, None, {"sha256": sha256, "omitted": "it contains a secret (an API key or token)"}
        )
    return Event(CONTEXT_RECORD, node_id, None, {"sha256": sha256, "value": context})


class JSONLWriter:
    """Appends each event to a file as it happens, so a crash leaves a readable prefix.

    The root's call_start describes the context (hash and metadata); with `context=` the
    context itself is also written, once, as a `context` record right after it, so that
    the run can be replayed from the file alone.
    """

    def __init__(self, path: str | Path, context: object = None) -> None:
        # A lone surrogate (a reply's JSON "\ud800") is written as that same JSON escape, so the line stays valid.
        self._file: IO[str] = open(path, "a", encoding="utf-8", errors="backslashreplace")
        self._lock = threading.Lock()
        self._context = context

    def __call__(self, event: Event) -> None:
        text = event.to_json() + "\n"
        if self._context is not None and event.kind == "call_start" and event.parent_id is None:
            text += context_record(event.node_id, event.data["context"]["sha256"], self._context).to_json() + "\n"
            self._context = None  # once, and the writer stops holding on to it
        with self._lock:
            self._file.write(text)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
