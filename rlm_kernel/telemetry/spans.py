"""One run's events as one trace: a span per node, model call, code block and sub-call.

The handler reads event fields only (it is a view, like the JSONL writer) and is called under the run's emit
lock, one event at a time. Spans start and end at the events' own times, so the tree shows the run's timings as
they happened:

    AGENT  rlm n0                    call_start .. call_end
      LLM    chat <model>            first model_wait (or the reply less its seconds) .. iteration
      TOOL   code 0.0                the reply (or the block before) .. code_result
        LLM    chat <sub_model>      subcall_start .. subcall_end          llm_query
        CHAIN  rlm_query s1          subcall_start .. subcall_end          rlm_query
          AGENT  rlm n1              the child's call_start .. call_end
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from rlm_kernel.core.trace import Event
from rlm_kernel.telemetry.attributes import (
    CHAIN,
    KIND,
    TOOL,
    TextPolicy,
    end_attributes,
    model_attributes,
    node_attributes,
    request_attributes,
    subtree_attributes,
    usage_attributes,
)

_PROPAGATOR = TraceContextTextMapPropagator()
# How a node ended: an answer (even one cut short by its iterations) is not an error; the rest are.
_OK = ("done", "max_iterations")


def ns(seconds: float) -> int:
    return int(seconds * 1e9)


def traceparent(span: Span) -> str | None:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> otel_context.Context | None:
    """The context a W3C traceparent names; None for none (or one that does not parse)."""
    if not traceparent:
        return None
    extracted = _PROPAGATOR.extract({"traceparent": traceparent})
    return extracted if trace.get_current_span(extracted).get_span_context().is_valid else None


class _Node:
    """A node's open spans and what its next spans need."""

    def __init__(self, span: Span, model: str, depth: int) -> None:
        self.span, self.model, self.depth = span, model, depth
        self.waits: dict[int, tuple[float, int]] = {}  # iteration -> (first model_wait time, attempts)
        self.streamed: set[int] = set()  # iterations whose reply came as model_text pieces
        self.blocks: dict[tuple[int, int], Span] = {}  # (iteration, block) -> its TOOL span, open
        self.boundary = 0.0  # when the current block started: its reply, or the block before it
        self.subcalls: dict[str, tuple[Span, str]] = {}  # subcall id -> (span, kind), open
        self.first_messages: list[dict[str, Any]] = []  # the first call's system and user prompts


class RunSpans:
    """An event handler that turns one run's events into spans (`RLM(on_event=...)` shape)."""

    def __init__(self, tracer: Tracer, text: TextPolicy, *, parent: str | None = None, link: str | None = None) -> None:
        self.tracer, self.text = tracer, text
        self._parent = context_of(parent)  # a driver's span this run joins (on a worker)
        self._link = context_of(link)  # a batch's span this run's own trace links to
        self.nodes: dict[str, _Node] = {}
        self.children: dict[str, Span] = {}  # child node id -> its rlm_query sub-call span
        self.settings: Mapping[str, Any] = {}

    def __call__(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.kind}", None)
        if handler is not None:
            handler(event)

    def traceparent(self, node_id: str) -> str | None:
        """The W3C traceparent of a node's span, for work that runs elsewhere and joins this trace (a Ray task)."""
        node = self.nodes.get(node_id)
        return traceparent(node.span) if node else None

    def _start(
        self, name: str, parent: Span | None, start: float, attributes: dict[str, Any], links: list[Link] | None = None
    ) -> Span:
        if parent is not None:
            ctx: otel_context.Context | None = trace.set_span_in_context(parent)
        elif self._parent is not None:
            ctx = self._parent
        elif self._link is not None:
            ctx = otel_context.Context()  # a question of a batch: a trace of its own, linked to the batch
        else:
            ctx = None  # the caller's current span, if it has one
        kind = SpanKind.CLIENT if attributes.get(KIND) == "LLM" else SpanKind.INTERNAL
        return self.tracer.start_span(
            name, ctx, kind, attributes=attributes, links=links, start_time=ns(start), record_exception=False
        )

    # -- nodes ------------------------------------------------------------------------------------

    def _on_call_start(self, e: Event) -> None:
        d = e.data
        if e.parent_id is None:
            self.settings = d.get("settings") or {}
        parent = self.children.pop(e.node_id, None) or (
            self.nodes[e.parent_id].span if e.parent_id in self.nodes else None
        )
        links = [Link(trace.get_current_span(self._link).get_span_context())] if self._link and not parent else None
        span = self._start(f"rlm {e.node_id}", parent, e.time, node_attributes(d, e.node_id, self.text), links)
        node = self.nodes[e.node_id] = _Node(span, d["model"], d["depth"])
        prompts = (("system", d.get("system_prompt")), ("user", d.get("user_prompt")))
        node.first_messages = [{"role": role, "content": text} for role, text in prompts if text is not None]

    def _on_call_end(self, e: Event) -> None:
        node = self.nodes.pop(e.node_id, None)
        if node is None:
            return
        for span in [*node.blocks.values(), *(s for s, _ in node.subcalls.values())]:
            span.set_status(Status(StatusCode.ERROR, "the node ended first"))
            span.end(ns(e.time))  # a block the run's end stopped
        d = e.data
        for iteration, (start, attempts) in node.waits.items():  # a model call that never replied
            self._failed_call(node, iteration, start, attempts, e.time, d.get("error") or d["status"])
        node.span.set_attributes(end_attributes(d, self.text))
        if d["status"] in _OK:
            node.span.set_status(Status(StatusCode.OK))
        else:
            node.span.set_status(Status(StatusCode.ERROR, f"{d['status']}: {d.get('error') or ''}"[:200]))
        node.span.end(ns(e.time))

    # -- the node's own model calls ---------------------------------------------------------------

    def _on_model_wait(self, e: Event) -> None:
        node = self.nodes.get(e.node_id)
        if node is not None and "subcall_id" not in e.data:  # a sub-call's attempt: its own span counts it
            first, attempts = node.waits.get(e.data["iteration"], (e.time, 0))
            node.waits[e.data["iteration"]] = (first, attempts + 1)

    def _on_model_text(self, e: Event) -> None:
        node = self.nodes.get(e.node_id)
        if node is not None:
            node.streamed.add(e.data["iteration"])

    def _on_iteration(self, e: Event) -> None:
        node = self.nodes.get(e.node_id)
        if node is None:
            return
        d = e.data
        index = d["index"]
        start, attempts = node.waits.pop(index, (e.time - float(d.get("seconds") or 0.0), 1))
        usage = d.get("usage") or {}
        attributes = {
            **model_attributes(node.model, d.get("model")),
            **request_attributes(self.settings, sub=node.depth > 0),
            **usage_attributes(usage),
            "rlm.iteration": index,
            "rlm.retries": max(0, attempts - 1),
            "rlm.streamed": index in node.streamed,
            "rlm.blocks": int(d.get("blocks") or 0),
        }
        # What this call added to the history; the first call's system and user messages travel in call_start.
        new: list[Mapping[str, Any]] = list(d.get("new_messages") or []) or list(node.first_messages)
        node.first_messages = []
        attributes.update(self.text.messages("llm.input_messages", new, self.text.inputs))
        attributes.update(self.text.input(str(new[-1].get("content", "")) if new else None))  # the newest message
        reply = d.get("reply") or ""
        attributes.update(
            self.text.messages("llm.output_messages", [{"role": "assistant", "content": reply}], self.text.outputs)
        )
        attributes.update(self.text.output(reply))
        span = self._start(f"chat {node.model}", node.span, start, attributes)
        span.set_status(Status(StatusCode.OK))
        span.end(ns(e.time))
        node.streamed.discard(index)
        node.boundary = e.time

    def _failed_call(self, node: _Node, iteration: int, start: float, attempts: int, end: float, why: str) -> None:
        attributes = {
            **model_attributes(node.model),
            **request_attributes(self.settings, sub=node.depth > 0),
            "rlm.iteration": iteration,
            "rlm.retries": max(0, attempts - 1),
            "rlm.error": self.text.cut(why),
        }
        span = self._start(f"chat {node.model}", node.span, start, attributes)
        span.set_status(Status(StatusCode.ERROR, why[:200]))
        span.end(ns(end))

    # -- code blocks ------------------------------------------------------------------------------

    def _block(self, node: _Node, iteration: int, index: int) -> Span:
        """A block's span, started when its first event (a sub-call, or its result) comes, at the block's start."""
        key = (iteration, index)
        if key not in node.blocks:
            attributes = {
                KIND: TOOL,
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "python",
                "tool.name": "python",
                "rlm.iteration": iteration,
                "rlm.block": index,
            }
            node.blocks[key] = self._start(f"code {iteration}.{index}", node.span, node.boundary, attributes)
        return node.blocks[key]

    def _on_code_result(self, e: Event) -> None:
        node = self.nodes.get(e.node_id)
        if node is None:
            return
        d = e.data
        span = self._block(node, d["iteration"], d["index"])
        del node.blocks[(d["iteration"], d["index"])]
        span.set_attributes(
            {
                **self.text.input(d.get("code")),
                **self.text.output(d.get("output")),
                "rlm.created": list(d.get("created") or []),
                "rlm.rebound": list(d.get("rebound") or []),
                "rlm.submitted": bool(d.get("submitted")),
                "rlm.seconds": float(d.get("seconds") or 0.0),
            }
        )
        if d.get("error"):
            span.set_attribute("rlm.error", self.text.cut(str(d["error"])))
            span.set_status(Status(StatusCode.ERROR, str(d["error"])[:200]))
        else:
            span.set_status(Status(StatusCode.OK))
        span.end(ns(e.time))
        node.boundary = e.time

    # -- sub-calls --------------------------------------------------------------------------------

    def _on_subcall_start(self, e: Event) -> None:
        node = self.nodes.get(e.node_id)
        if node is None:
            return
        d = e.data
        iteration, block = d.get("iteration"), d.get("block")
        parent = self._block(node, iteration, block) if iteration is not None and block is not None else node.span
        common = {
            "rlm.subcall_id": d["subcall_id"],
            "rlm.subcall_kind": d["kind"],
            "rlm.prompt_chars": int(d.get("prompt_chars") or 0),
            **({"rlm.prompt_sha256": d["prompt_sha256"]} if d.get("prompt_sha256") else {}),
            **self.text.input(d.get("prompt_preview")),
        }
        if d["kind"] == "rlm":
            attributes = {KIND: CHAIN, "rlm.child_id": d.get("child_id") or "", "gen_ai.request.model": d["model"]}
            span = self._start(f"rlm_query {d['subcall_id']}", parent, e.time, {**attributes, **common})
            if d.get("child_id"):
                self.children[d["child_id"]] = span
        else:
            attributes = {**model_attributes(d["model"]), **request_attributes(self.settings, sub=True)}
            span = self._start(f"chat {d['model']}", parent, e.time, {**attributes, **common})
        node.subcalls[d["subcall_id"]] = (span, d["kind"])

    def _on_subcall_end(self, e: Event) -> None:
        node = self.nodes.get(e.node_id)
        opened = node.subcalls.pop(e.data["subcall_id"], None) if node else None
        if opened is None:
            return
        span, kind = opened
        d = e.data
        usage = d.get("usage") or {}
        span.set_attributes(usage_attributes(usage) if kind == "llm" else subtree_attributes(usage))
        span.set_attributes({"rlm.seconds": float(d.get("seconds") or 0.0), **self.text.output(d.get("reply"))})
        if d.get("error"):
            span.set_attribute("rlm.error", self.text.cut(str(d["error"])))
            span.set_status(Status(StatusCode.ERROR, str(d["error"])[:200]))
        else:
            span.set_status(Status(StatusCode.OK))
        span.end(ns(e.time))
