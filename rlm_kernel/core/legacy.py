"""Upgrading events of schema 1 (traces and exports written before the events carried everything).

Schema 1 had no `schema` field. Its root `call_start` did not record the run's settings, sub-calls
did not say which code block started them, and code results held only the merged observation.
This module is the one place that recovers those: the settings from the recorded system prompt
(checked by generating the prompt again), the block of a sub-call from the order of events (a node
runs one block at a time), stdout from the observation. Every consumer then reads schema 2 only.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from rlm_kernel.core.ledger import Limits
from rlm_kernel.core.prompts import Capabilities, system_prompt

if TYPE_CHECKING:
    from rlm_kernel.core.trace import Event

_NUMBER = r"([\d,.e+-]+)"
_PROMPT_SETTINGS = {
    "max_iterations": rf"{_NUMBER} iterations \(replies\) for this call",
    "max_output_chars": rf"Output longer than {_NUMBER} characters",
    "concurrency": rf"\(up to {_NUMBER} at a time\)",
    "max_llm_calls": rf"{_NUMBER} model calls for the whole tree",
    "max_tokens": rf"{_NUMBER} tokens for the whole tree",
    "max_cost_usd": rf"\${_NUMBER} for the whole tree",
    "max_seconds": rf"{_NUMBER} seconds of wall time",
    "cell_timeout": rf"each code block may run {_NUMBER} s at most",
}
_INTEGERS = {"max_iterations", "max_output_chars", "concurrency", "max_llm_calls", "max_tokens"}
_SUB_MODEL = re.compile(r"`llm_query\(prompt, model=None\)`: ask a sub-model \((.*?)\) one question")
_MAX_DEPTH = re.compile(r"start a child RLM \(depth \d+ of at most (\d+)\)")


def upgrade_events(events: list[Event]) -> list[Event]:
    """`events` in schema 2; events already in schema 2 are returned as they are."""
    starts = [e for e in events if e.kind == "call_start"]
    if not starts or "schema" in starts[0].data:
        return events
    blocks = _blocks_of_subcalls(events)
    child_iterations = next(
        (_prompt_number("max_iterations", e.data["system_prompt"]) for e in starts if e.data["depth"] == 1), None
    )
    upgraded = []
    for event in events:
        d = dict(event.data)
        if event.kind == "call_start":
            d["schema"] = 2
            d["max_iterations"] = _prompt_number("max_iterations", d["system_prompt"])
            if event.parent_id is None:
                d["settings"] = _settings_from_prompt(d["system_prompt"], d["model"], child_iterations)
        elif event.kind == "subcall_start":
            d["iteration"], d["block"] = blocks.get(d["subcall_id"], (None, None))
        elif event.kind == "code_result":
            error, text = d.get("error"), d["output"]
            if error and text.endswith(error):
                text = text[: -len(error)].rstrip("\n")
            d.update(stdout=text, stderr="", value=None)
        upgraded.append(dataclasses.replace(event, data=d))
    return upgraded


# Traces recorded before issue 12 counted one line too many for a context ending with a newline: a
# replay leaves the line count out of the conversations it looks replies up by, so that those still replay.
_LINE_COUNT = re.compile(r"^lines: [\d,]+$| in [\d,]+ lines \(about ", re.M)


def without_line_count(first_user_message: str) -> str:
    """A root or child's first user message with its context's line count masked (see _LINE_COUNT)."""
    return _LINE_COUNT.sub("<lines>", first_user_message)


def _blocks_of_subcalls(events: list[Event]) -> dict[str, tuple[int, int]]:
    """Sub-call id -> (iteration, block): the sub-calls a node starts before a code_result belong to that block."""
    open_calls: dict[str, list[str]] = {}
    blocks: dict[str, tuple[int, int]] = {}
    for event in events:
        if event.kind == "subcall_start":
            open_calls.setdefault(event.node_id, []).append(event.data["subcall_id"])
        elif event.kind == "code_result":
            for sub_id in open_calls.pop(event.node_id, []):
                blocks[sub_id] = (event.data["iteration"], event.data["index"])
    return blocks


def _prompt_number(name: str, prompt: str) -> Any:
    match = re.search(_PROMPT_SETTINGS[name], prompt)
    if match is None:
        return None
    text = match.group(1).replace(",", "")
    return int(text) if name in _INTEGERS else float(text)


def _settings_from_prompt(prompt: str, model: str, child_iterations: int | None) -> dict[str, Any] | None:
    """The run's settings read back from its root system prompt; None when the prompt does not read back."""
    found = {name: _prompt_number(name, prompt) for name in _PROMPT_SETTINGS}
    sub_model = _SUB_MODEL.search(prompt)
    depth = _MAX_DEPTH.search(prompt)
    if None in (found["max_iterations"], found["max_output_chars"], found["concurrency"]):
        return None
    limits = Limits(found["max_llm_calls"], found["max_tokens"], found["max_cost_usd"], found["max_seconds"])
    capabilities = Capabilities(
        depth=0,
        max_depth=int(depth.group(1)) + 1 if depth else 1,
        max_iterations=found["max_iterations"],
        max_output_chars=found["max_output_chars"],
        sub_model=sub_model.group(1) if sub_model else model,
        limits=limits,
        concurrency=found["concurrency"],
        cell_timeout=found["cell_timeout"],
    )
    if system_prompt(capabilities) != prompt:  # a prompt of another version: its settings cannot be trusted
        return None
    return {
        **found,
        "model": model,
        "sub_model": capabilities.sub_model,
        "max_depth": capabilities.max_depth,
        "child_max_iterations": child_iterations,
    }
