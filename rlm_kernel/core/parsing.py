"""Reading a model reply: which code blocks to run, and a paper-era text FINAL answer."""

from __future__ import annotations

import ast
import keyword
import re
from dataclasses import dataclass, field
from typing import Any

RUNNABLE_LANGUAGES = {"repl", "python", "py", "python3", ""}
_OUTPUT_LANGUAGES = {"output", "text", "console", "stdout", "result", "repl-output"}
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[ \t]*$")
_FAKE_OUTPUT = re.compile(
    r"^[ \t]*(?:\*\*)?(?:REPL output|Output|Observation|Execution result)s?(?:\*\*)?[ \t]*:", re.I
)
_TEXT_FINAL = re.compile(r"^[ \t]*(FINAL_VAR|FINAL)\(", re.M)


@dataclass
class ParsedReply:
    blocks: list[str] = field(default_factory=list)
    prose: str = ""  # the reply outside code blocks
    kept: str = ""  # the reply as it stays in the history (fabricated output cut off)
    fabricated_output: bool = False  # the model wrote text posing as REPL output; it was dropped
    dropped_blocks: int = 0  # runnable blocks after that text, dropped with it


def parse_reply(reply: str) -> ParsedReply:
    """Split a reply into runnable code blocks and prose.

    Blocks fenced ```repl, ```python or bare ``` run, in order; an unclosed last
    fence runs to the end of the reply. A fence that wraps another one (a bare
    ``` line, then ```repl: real models write this) is dropped with its closing
    line, and the inner block runs as the model meant. Anything after the first runnable block
    that poses as its output (an ```output fence, a "REPL output:" line) is cut,
    together with the rest of the reply: the model has not seen any output yet.
    A prose "Result:" line is the model's own words, not a fake output.
    """
    parsed = ParsedReply()
    prose: list[str] = []
    kept: list[str] = []
    code: list[str] | None = None
    language = ""
    wrapped = False  # an outer fence is still open around the block that just closed
    lines = reply.splitlines(keepends=True)
    for number, line in enumerate(lines):
        fence = _FENCE.match(line)
        if code is not None:
            if fence and not fence.group(1):
                if language in RUNNABLE_LANGUAGES:
                    parsed.blocks.append("".join(code))
                code = None
            elif fence and not "".join(code).strip():  # a fence right inside a fence: the inner one is the block
                code, language, wrapped = [], fence.group(1).lower(), True
            else:
                code.append(line)
            kept.append(line)
            continue
        if wrapped and (not line.strip() or (fence and not fence.group(1))):
            wrapped = not fence  # blank lines up to the wrapper's closing fence, which opens nothing
            kept.append(line)
            continue
        wrapped = False
        if parsed.blocks and ((fence and fence.group(1).lower() in _OUTPUT_LANGUAGES) or _FAKE_OUTPUT.match(line)):
            parsed.fabricated_output = True
            parsed.dropped_blocks = len(parse_reply("".join(lines[number + 1 :])).blocks)
            break
        if fence:
            code, language = [], fence.group(1).lower()
        else:
            prose.append(line)
        kept.append(line)
    if code is not None and language in RUNNABLE_LANGUAGES and "".join(code).strip():
        parsed.blocks.append("".join(code))
    parsed.blocks = [b for b in parsed.blocks if b.strip()]
    parsed.prose = "".join(prose)
    parsed.kept = "".join(kept).rstrip()
    return parsed


@dataclass(frozen=True)
class TextFinal:
    kind: str  # "FINAL" or "FINAL_VAR"
    argument: Any  # FINAL: a Python literal's value, else the text; FINAL_VAR: the variable's name
    name: str | None = None  # FINAL(x) with x a bare name, not a literal: the REPL's variable x, when it has one


def find_text_final(prose: str) -> TextFinal | None:
    """The first line-initial FINAL(...) or FINAL_VAR(...) written outside code."""
    match = _TEXT_FINAL.search(prose)
    if match is None:
        return None
    rest = prose[match.end() :]
    inner = _balanced(rest)
    if inner is None:  # unbalanced: take the rest of the line, minus a trailing ")"
        inner = rest.split("\n", 1)[0].rstrip().removesuffix(")")
    inner = inner.strip()
    if match.group(1) == "FINAL_VAR":
        return TextFinal("FINAL_VAR", inner.strip("'\"` "))
    value = _unquote(inner)
    bare = value == inner and inner.isidentifier() and not keyword.iskeyword(inner)
    return TextFinal("FINAL", value, inner if bare else None)


def _balanced(text: str) -> str | None:
    depth = 1
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return text[:i]
    return None


def _unquote(text: str) -> Any:
    """A Python literal's value (FINAL(42) gives 42, FINAL([1, 2]) a list), else the text as written."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return text
