"""A batch while it runs and once it has ended: `BatchProgress` reads the events of its questions (each tagged with
its question's index) and their results, and says how many are queued, running, done and failed, and what they
used; `render_batch_html` draws it as one static page, each question's call tree as a local run's.

Nothing here depends on the order events arrive in across questions or workers: each event names its question,
each question's events build that question's own `Trace` (which reads only the events' fields), and a question's
result, once it is in, stands for the question whatever else arrives late.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import Event, Trace
from rlm_kernel.formats import theme
from rlm_kernel.formats.html import badge, render_html
from rlm_kernel.formats.progress import plural, usage_parts

BATCH_STATES = ("queued", "running", "done", "failed")
DONE = ("done", "max_iterations")  # a question that ended so counts as done; any other end, failed
QUERY_CHARS = 100
TREES_SHOWN = 100  # the static page draws the trees of at most this many questions (the first, failed ones first)

_PAGE = (
    f"font-family:system-ui,sans-serif;font-size:13px;line-height:1.45;color:{theme.TEXT};background:{theme.BACKGROUND}"
)
_MUTED = f"color:{theme.MUTED};font-size:12px"
_ROW = "margin:2px 0;padding-left:8px;border-left:3px solid {colour}"


@dataclass
class QuestionProgress:
    """One question of a batch: its events so far (as a trace), whether a worker started it, its result once in."""

    query: str
    trace: Trace = field(default_factory=Trace)
    started: float | None = None  # when it started (time.time()), None while queued
    result: RLMResult | None = None

    @property
    def state(self) -> str:
        """queued, running, done or failed."""
        if self.result is not None:
            return "done" if self.result.status in DONE else "failed"
        return "queued" if self.started is None else "running"

    @property
    def status(self) -> str:
        """Its result's status once it has ended (done, max_iterations, error, budget, interrupted), else its state."""
        return self.result.status if self.result is not None else self.state

    @property
    def usage(self) -> Usage:
        """What it used: its result's, once in; else what its events say so far."""
        if self.result is not None:
            return self.result.usage
        root = self.trace.root
        return self.trace.subtree_usage(root.id) if root is not None else Usage()

    def seconds(self, now: float) -> float | None:
        if self.result is not None:
            return self.result.seconds
        return None if self.started is None else now - self.started


class BatchProgress:
    """A batch as its driver sees it, from the events and results of its questions, in any order (thread-safe).

    `saw(index, event)`: an event of question `index` (`None`: the question started, on a thread or a worker; any
    event also says so); `finished(index, result)`: its result. A question started again (a worker died and the
    executor sent it elsewhere) starts a fresh trace."""

    def __init__(self, queries: Sequence[str], kept: Mapping[int, RLMResult] | None = None) -> None:
        self.questions = [QuestionProgress(query) for query in queries]
        self.started = time.time()
        self.ended: float | None = None
        self.retried = 0
        self._lock = threading.Lock()
        for index, result in (kept or {}).items():
            self._finish(index, result)

    def saw(self, index: int, event: Event | None) -> None:
        with self._lock:
            question = self.questions[index]
            if question.result is not None:
                return  # late: its result stands
            if event is None:
                if question.started is not None and question.trace.events:  # a second attempt: its events anew
                    question.trace = Trace()
                    self.retried += 1
                question.started = time.time()
                return
            if question.started is None:
                question.started = event.time
            try:
                question.trace.add(event)
            except KeyError:  # a node's event without its call_start (lost with a dead worker): the result will say
                pass

    def finished(self, index: int, result: RLMResult) -> None:
        with self._lock:
            self._finish(index, result)

    def _finish(self, index: int, result: RLMResult) -> None:
        question = self.questions[index]
        question.result = result
        if result.trace.root is not None or not question.trace.events:
            question.trace = result.trace  # the whole run, also when some of its live events never arrived
        if question.started is None:
            question.started = time.time() - result.seconds

    def close(self) -> None:
        with self._lock:
            self.ended = self.ended or time.time()

    def counts(self) -> dict[str, int]:
        with self._lock:
            counts = dict.fromkeys(BATCH_STATES, 0)
            for question in self.questions:
                counts[question.state] += 1
            return counts

    def usage(self) -> Usage:
        total = Usage()
        with self._lock:
            for question in self.questions:
                total.add(question.usage)
        return total

    def elapsed(self, now: float | None = None) -> float:
        return (self.ended or now or time.time()) - self.started

    def line(self, now: float | None = None) -> str:
        """`3 questions: 1 queued · 1 running · 1 done · 0 failed · 4 model calls · 1,200+80 tok · $0.0010 · 2.1 s`."""
        counts = self.counts()
        states = " · ".join(f"{counts[state]:,} {state}" for state in BATCH_STATES)
        parts = [f"{plural(len(self.questions), 'question')}: {states}", *usage_parts(self.usage())]
        return " · ".join([*parts, f"{self.elapsed(now):.1f} s"])

    def row(self, index: int, now: float | None = None, *, status: bool = True) -> str:
        """One question in one line: its number, status (unless a badge says it), query, what it used and for how
        long."""
        with self._lock:
            question = self.questions[index]
            state, usage, seconds = question.status, question.usage, question.seconds(now or time.time())
        parts = [f"#{index}", *([state] if status else []), _shorten(" ".join(question.query.split()), QUERY_CHARS)]
        if state != "queued":
            parts += usage_parts(usage)
        if seconds is not None:
            parts.append(f"{seconds:.1f} s")
        return " · ".join(parts)

    def tree_html(self, index: int) -> str:
        """A question's call tree, as a local run's (`render_html`); a line while it has none."""
        with self._lock:  # drawn under the lock: no event changes the tree while it is read
            question = self.questions[index]
            trace, result = question.trace, question.result
            if trace.root is not None:
                return render_html(trace)
        if result is not None and result.error:
            return f'<div style="{_PAGE}"><i>{_e(result.error)}</i></div>'
        return f'<div style="{_PAGE};{_MUTED}"><i>{"not started yet" if question.started is None else "starting"}</i></div>'

    def outline(self) -> str:
        """The batch as text: its line, then one line a question (for terminals and `text/plain`)."""
        return "\n".join([f"RLM batch: {self.line()}", *(self.row(i) for i in range(len(self.questions)))])


def header_html(progress: BatchProgress, now: float | None = None) -> str:
    """The batch's counts as badges, then what it used and for how long: the live view's header and the page's."""
    counts = progress.counts()
    badges = " ".join(
        badge("error" if state == "failed" and counts[state] else state, f"{counts[state]:,} {state}")
        for state in BATCH_STATES
    )
    used = " · ".join([*usage_parts(progress.usage()), f"{progress.elapsed(now):.1f} s"])
    total = plural(len(progress.questions), "question")
    return f'<div style="{_PAGE};margin:2px 0"><b>RLM batch</b> · {_e(total)}: {badges} · {_e(used)}</div>'


def render_batch_html(progress: BatchProgress, trees: int = TREES_SHOWN) -> str:
    """The batch as self-contained HTML: its line, then a folded row a question, holding its call tree; the trees of
    at most `trees` questions (the failed ones first, then in order), the other rows a line each."""
    failed = [i for i, q in enumerate(progress.questions) if q.state == "failed"]
    others = [i for i, q in enumerate(progress.questions) if q.state != "failed"]
    drawn = set((failed + others)[:trees])
    rows = []
    for index, question in enumerate(progress.questions):
        colour = theme.STATUS_COLOURS.get(question.status, theme.OTHER_STATUS)
        summary = f"{badge(question.status)} {_e(progress.row(index, status=False))}"
        if index in drawn:
            rows.append(
                f'<details style="{_ROW.format(colour=colour)}"><summary style="cursor:pointer">{summary}</summary>'
                f"{progress.tree_html(index)}</details>"
            )
        else:
            rows.append(f'<div style="{_ROW.format(colour=colour)}">{summary}</div>')
    more = len(progress.questions) - len(drawn)
    note = (
        f'<div style="{_MUTED}">the call trees of {plural(len(drawn), "question")} are drawn; '
        f"every result's own is in its <code>.trace</code> ({more:,} more)</div>"
        if more
        else ""
    )
    return f'<div style="{_PAGE}">{header_html(progress)}{"".join(rows)}{note}</div>'


def _e(text: object) -> str:
    return html.escape(str(text))


def _shorten(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"
