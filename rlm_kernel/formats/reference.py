"""A trace in the log format of the reference implementation (alexzhang13/rlm, `RLMLogger`), so its viewer opens our runs.

    rlm trace convert TRACE.jsonl --to reference OUT.jsonl

The reference writes a `metadata` line, then one line per iteration of the root call with
`prompt` (the whole message list sent), `response`, `code_blocks` [{`code`, `result` {`stdout`,
`stderr`, `locals`, `execution_time`, `rlm_calls`}}], `final_answer` and `iteration_time`.

How our events map onto it:
- metadata: `root_model` is the root call's model, `other_backends` the other models used,
  `backend` "litellm", `environment_type` "rlm_kernel"; `max_depth` is the depth the run
  reached plus one. An extra `rlm_kernel` key holds the question, status, answer, usage and the
  context's metadata (the viewer ignores keys it does not know).
- prompt: rebuilt from the call's first two messages (call_start), each earlier reply as kept
  in the history, and each iteration's message deltas; response: the reply as the model wrote it.
  The first user message gains one last line, `[rlm_kernel] original query: "..."`, from which the
  viewer reads the question (it shows a user message only when it is 50 to 500 characters long).
- stdout: the block's stdout, then the trailing value's display, as the code_result event records
  them; stderr: its stderr, then the traceback (`error`).
- execution_time: the block's seconds; iteration_time: the model call's plus the blocks'.
- rlm_calls: the sub-calls the block made (each subcall_start names its iteration and block). An llm_query has its prompt (as recorded: the first
  500 characters), reply, usage and seconds; a child RLM has its question as the prompt, its
  answer as the response, and its own iterations, in the same form, in `metadata.iterations`,
  where the reference nests a child's trajectory. A call that returned no reply has as its
  response the text the model received instead (a child's "Error: the child RLM stopped ...").
- a block that an interrupt stopped is recorded with "interrupted" as its stderr.
- a file several runs were appended to holds one reference log per run (`rlm trace convert --run N`).
- final_answer: the root's answer (as recorded: text) on its last iteration.

What does not carry over:
- `locals`: variable values are never recorded; the names a block created or rebound are listed
  with the value "<not recorded>", so the viewer cannot show the context from `locals.context`.
- the context itself, `max_iterations` and the other settings (not in the events: null);
- the llm_query prompts past their first 500 characters; budgets, costs and statuses of the
  nodes other than in the `rlm_kernel` metadata key; the message deltas (each line repeats
  the whole prompt, so the converted file grows with the square of the iterations).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.prompts import child_stopped_message
from rlm_kernel.core.trace import Event, Trace

NOT_RECORDED = "<not recorded>"


def reference_lines(trace: Trace) -> list[dict[str, Any]]:
    """The metadata line, then one line per iteration of the root call."""
    root = trace.root
    if root is None:
        raise ValueError("the trace has no root call")
    by_node: dict[str, list[Event]] = {}
    for event in trace.events:
        by_node.setdefault(event.node_id, []).append(event)
    nodes = list(trace.walk())
    others = sorted(({n.model for n in nodes} | {s.model for n in nodes for s in n.subcalls}) - {root.model})
    metadata = {
        "type": "metadata",
        "timestamp": _timestamp(by_node[root.id][0]),
        "root_model": root.model,
        "max_depth": max(n.depth for n in nodes) + 1,
        "max_iterations": None,
        "backend": "litellm",
        "backend_kwargs": {"model_name": root.model},
        "environment_type": "rlm_kernel",
        "environment_kwargs": {},
        "other_backends": others or None,
        "rlm_kernel": {
            "query": root.query,
            "status": root.status,
            "answer": root.answer,
            "error": root.error,
            "usage": trace.subtree_usage(root.id).to_dict(),
            "context": root.context,
        },
    }
    return [metadata, *({"type": "iteration", **line} for line in _iterations(trace, root.id, by_node))]


def write_reference(trace: Trace, path: str | Path) -> int:
    """Write the reference log to `path`; returns the number of lines."""
    lines = reference_lines(trace)
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
    return len(lines)


def _iterations(trace: Trace, node_id: str, by_node: dict[str, list[Event]]) -> list[dict[str, Any]]:
    node = trace.nodes[node_id]
    messages: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    calls: dict[str, dict[str, Any]] = {}  # sub-call id -> its rlm_calls entry
    of_block: dict[tuple[int, int], list[dict[str, Any]]] = {}  # (iteration, block) -> the sub-calls it made
    for event in by_node.get(node_id, []):
        d = event.data
        if event.kind == "call_start":
            messages = [
                {"role": "system", "content": d["system_prompt"]},
                {"role": "user", "content": f"{d['user_prompt']}\n\n{_query_line(d['query'])}"},
            ]
        elif event.kind == "iteration":
            messages = messages + d["new_messages"]
            lines.append(
                {
                    "iteration": d["index"] + 1,
                    "timestamp": _timestamp(event),
                    "prompt": messages,
                    "response": d["reply"],
                    "code_blocks": [],
                    "final_answer": None,
                    "iteration_time": d["seconds"],
                }
            )
            # The reply joins the history as kept (fabricated output cut); the deltas do not repeat it.
            messages = [*messages, {"role": "assistant", "content": d["reply"] if d.get("kept") is None else d["kept"]}]
        elif event.kind == "subcall_start":
            call = {
                "root_model": d["model"],
                "prompt": d["prompt_preview"],
                "response": None,
                "kind": d["kind"],
                "child_id": d.get("child_id"),
            }
            calls[d["subcall_id"]] = call
            of_block.setdefault((d["iteration"], d["block"]), []).append(call)
        elif event.kind == "subcall_end":
            usage = Usage(**d["usage"])
            calls[d["subcall_id"]].update(
                response=d.get("reply"),
                usage_summary=_usage_summary(calls[d["subcall_id"]]["root_model"], usage),
                prompt_tokens=usage.input_tokens,
                completion_tokens=usage.output_tokens,
                execution_time=d["seconds"],
                **({"error": d["error"]} if d.get("error") else {}),
            )
        elif event.kind == "code_result" and lines:
            locals_ = dict.fromkeys([*d["created"], *d["rebound"]], NOT_RECORDED)
            result = {
                "stdout": _joined(d["stdout"], d["value"]),
                "stderr": _joined(d["stderr"], d["error"]),
                "locals": locals_,
                "execution_time": d["seconds"],
                "rlm_calls": of_block.get((d["iteration"], d["index"]), []),
            }
            lines[-1]["code_blocks"].append({"code": d["code"], "result": result})
            lines[-1]["iteration_time"] += d["seconds"]
    for call in calls.values():
        child = call.pop("child_id")
        kind = call.pop("kind")
        if kind == "rlm" and child in trace.nodes:
            call["metadata"] = {"iterations": _iterations(trace, child, by_node)}
        if call["response"] is None:  # the viewer slices every response: give it what the model received
            call["response"] = _received_instead(trace, kind, child, call.get("error"))
    if lines and node.answer is not None and node.status in ("done", "max_iterations"):
        lines[-1]["final_answer"] = node.answer
    return lines


def _joined(*parts: str | None) -> str:
    """Parts of a block's output one after another, each on its own lines (as the model saw them)."""
    return "".join(p if p.endswith("\n") else p + "\n" for p in parts if p).rstrip("\n")


def _query_line(query: str) -> str:
    """The question as the viewer's pattern reads it: `original query: "..."`, with no straight quote inside."""
    return '[rlm_kernel] original query: "' + " ".join(query.split()).replace('"', "\u201d") + '"'


def _received_instead(trace: Trace, kind: str, child_id: str | None, error: str | None) -> str:
    if kind == "rlm" and child_id in trace.nodes:
        node = trace.nodes[child_id]
        return child_stopped_message(node.status, node.error)
    return f"Error: {error}" if error else ""


def _usage_summary(model: str, usage: Usage) -> dict[str, Any]:
    summary = {
        "total_calls": usage.llm_calls,
        "total_input_tokens": usage.input_tokens,
        "total_output_tokens": usage.output_tokens,
    }
    return {"model_usage_summaries": {model: summary}}


def _timestamp(event: Event) -> str:
    return datetime.fromtimestamp(event.time).isoformat()
