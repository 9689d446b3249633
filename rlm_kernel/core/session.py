"""Sessions: questions that remember (`session = RLM(...).session(); session.completion(context, query)`).

A session keeps one REPL namespace across its questions (the model's variables stay) and tells the root
model, before each new question, what was asked and answered so far. That account stays within
`session_tokens` (estimated as the ledger does, 3 characters a token): the newest turns are told in full
(question, answer, the variables made); older ones are compacted to a line each, question and the start of
the answer; the oldest, past the budget, only counted. So the root prompt is bounded however long the
session runs. Each question has its own result, trace, usage and budgets.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlm_kernel.core.custom_tools import RESERVED
from rlm_kernel.core.errors import RunInterrupted
from rlm_kernel.core.repl import REPL
from rlm_kernel.core.result import EarlierTurn, RLMResult
from rlm_kernel.core.run import Asker, run_question
from rlm_kernel.core.typed import AnswerType

FULL_ANSWER_CHARS = 1500  # of an answer told in full
LINE_CHARS = 160  # of a question and of an answer, in a compacted line
FULL_SHARE = 0.6  # of the budget the newest turns may take in full; the rest is for compacted lines

_ids = itertools.count(1)


@dataclass
class Turn:
    query: str
    status: str
    answer: str
    variables: list[str] = field(default_factory=list)


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 3)


def _clip(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 1] + "…"


def render_history(turns: Sequence[Turn], budget_tokens: int) -> str | None:
    """What the root is told of `turns` (oldest first), within `budget_tokens`; None when there is nothing."""
    if not turns or budget_tokens <= 0:
        return None
    numbered = list(enumerate(turns, 1))
    full: list[str] = []
    used = 0
    # Even the newest turn is cut to the budget: a small memory still holds its question and an answer's start.
    answer_chars = max(LINE_CHARS // 2, min(FULL_ANSWER_CHARS, int(budget_tokens * FULL_SHARE * 3) - 2 * LINE_CHARS))
    for number, turn in reversed(numbered):
        variables = (
            f"\nVariables it made: {_clip(', '.join(turn.variables[:30]), LINE_CHARS)}" if turn.variables else ""
        )
        query = _clip(turn.query, answer_chars)
        text = f"Question {number}: {query}\nYour answer ({turn.status}): {_clip(turn.answer, answer_chars)}{variables}"
        if full and used + _tokens(text) > budget_tokens * FULL_SHARE:
            break
        full.insert(0, text)
        used += _tokens(text)
    older = numbered[: len(numbered) - len(full)]
    lines: list[str] = []
    for number, turn in reversed(older):
        line = f"- {number}. {_clip(turn.query, LINE_CHARS)} → {_clip(turn.answer, LINE_CHARS)}"
        if used + _tokens(line) > budget_tokens:
            break
        lines.insert(0, line)
        used += _tokens(line)
    left_out = len(older) - len(lines)
    parts = [f"Earlier in this session ({len(turns)} question{'s' if len(turns) > 1 else ''}):"]
    if left_out:
        parts.append(f"[questions 1 to {left_out} are left out: the session is longer than its memory]")
    if lines:
        parts.append("Compacted:\n" + "\n".join(lines))
    parts.extend(full)
    return "\n\n".join(parts)


class Session:
    """One conversation with an RLM: the REPL namespace and the questions so far carry from one question to the next."""

    def __init__(self, rlm: Asker, *, repl: REPL | None = None) -> None:
        self.rlm = rlm
        self.id = next(_ids)
        self.turns: list[Turn] = []
        self.results: list[RLMResult] = []
        self._asked: list[EarlierTurn] = []  # each question's trace and context, for the exports of later ones
        self._repl = repl
        self._own_repl = repl is None

    def history(self, budget_tokens: int | None = None) -> str | None:
        """What the root model is told of the earlier questions (see `render_history`)."""
        budget = self.rlm.config.loop.session_tokens if budget_tokens is None else budget_tokens
        return render_history(self.turns, budget)

    def completion(
        self,
        context: object,
        query: str,
        *,
        answer_type: Any = None,
        rlm: Asker | None = None,
        repl: REPL | None = None,
    ) -> RLMResult:
        """Ask the next question; `rlm` runs it under other settings, `repl` in another namespace (the notebook's)."""
        rlm = rlm or self.rlm
        if repl is None:
            if self._repl is None:
                self._repl = rlm.new_repl()
            repl = self._repl
        before = set(repl.names())
        typed = None if answer_type is None else AnswerType(answer_type)
        history = render_history(self.turns, rlm.config.loop.session_tokens)
        try:
            result = run_question(
                rlm.config,
                context,
                query,
                local=rlm.local,
                repl=repl,
                new_repl=rlm.new_repl,
                history=history,
                answer_type=typed,
            )
        except RunInterrupted as stop:
            self._record(stop.result, context, before, repl, rlm)
            raise
        self._record(result, context, before, repl, rlm)
        return result

    def _record(self, result: RLMResult, context: object, before: set[str], repl: REPL, rlm: Asker) -> None:
        made = [n for n in repl.names() if n not in before and not n.startswith("_")]
        tools = {tool.name for tool in rlm.config.tools}
        made = [n for n in made if n not in tools and n not in RESERVED]
        self.turns.append(Turn(result.query, result.status, result.text or f"(no answer: {result.error})", made))
        result.extra["session"] = self.id
        result.extra["session_turn"] = len(self.turns)
        result.earlier = tuple(self._asked)
        self.results.append(result)
        self._asked.append(EarlierTurn(result.trace, context))

    def rewind(self) -> None:
        """Forget the last question, so that asking it again (a re-run cell) is what it was the first time."""
        if self.turns:
            self.turns.pop()
            self.results.pop()
            self._asked.pop()

    def close(self) -> None:
        """Release the REPL the session made (an isolated kernel)."""
        if self._own_repl and self._repl is not None:
            self._repl.close()
            self._repl = None

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
