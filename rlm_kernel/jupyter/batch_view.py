"""A batch's live view in a notebook: its counts, then one folded row a question holding its call tree.

`RLM.batch` / `abatch` ask core's registered maker for a watcher (core/batch.py: `register_batch_view`); the
extension registers `show_batch_view`, which shows one in a kernel with a frontend. The view reads the one stream
every batch gives its watcher (each question's events tagged with its index, from threads or Ray workers, and each
result as it comes) through `formats/batch.py: BatchProgress`, and redraws what changed at most every `throttle_s`
on a thread of its own, as the run view does. When the batch ends the static page takes its place in the same
output (`BatchPage`: nbconvert, GitHub and a saved notebook show it), and every widget model is closed.

Each question's tree is drawn into its folded row as it changes, whether or not the row is open: while a batch
runs in the kernel's main thread the kernel reads no message from the frontend, so it cannot know which rows the
user opened.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
from IPython.display import display

from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.trace import Event
from rlm_kernel.formats.batch import BatchProgress, header_html
from rlm_kernel.formats.html import STATUS_ICONS
from rlm_kernel.jupyter import messages as msg
from rlm_kernel.jupyter.text import BatchPage
from rlm_kernel.jupyter.view import close_widgets

ROWS_SHOWN = 50  # live rows: the first questions, and up to as many failed ones beyond them
TICK_S = 1.0  # while questions run, the header's elapsed time is redrawn this often even when no event comes


class BatchView:
    """A `BatchWatcher` (core/batch.py) that draws the batch with widgets; `show()` displays it, `close` leaves the
    static page in its place."""

    def __init__(
        self, queries: list[str], kept: Mapping[int, RLMResult] | None = None, throttle_s: float = 0.25
    ) -> None:
        self.progress = BatchProgress(queries, kept)
        self.throttle_s = throttle_s
        self._lock = threading.Lock()  # the dirty marks and the rows chosen
        self._flush_lock = threading.Lock()  # one flush at a time touches the widgets
        self._dirty: set[int] = set()
        self._shown: list[int] = []  # the questions that have rows, in order
        self._failed_rows = 0
        self._rows: dict[int, tuple[widgets.Accordion, widgets.HTML]] = {}
        self._header = widgets.HTML()
        self._rows_box = widgets.VBox()
        self._more = widgets.HTML()
        self._root = widgets.VBox([self._header, self._rows_box, self._more])
        self._handle: Any = None
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._worker: threading.Thread | None = None
        with self._lock:
            for index in range(len(queries)):
                self._maybe_row(index)

    @property
    def widget(self) -> widgets.VBox:
        return self._root

    def show(self) -> BatchView:
        self.flush()
        self._handle = display(self, display_id=True)
        return self

    # -- the BatchWatcher -------------------------------------------------------------------------------------------
    def event(self, index: int, event: Event | None) -> None:
        self.progress.saw(index, event)
        self._changed(index)

    def finished(self, index: int, result: RLMResult) -> None:
        self.progress.finished(index, result)
        self._changed(index)

    def close(self, results: list[RLMResult] | None) -> None:
        """The batch has ended: every result in, the last state drawn, then the static page in the view's place."""
        for index, result in enumerate(results or []):
            if self.progress.questions[index].result is None:  # its callback had not run yet
                self.progress.finished(index, result)
        self.progress.close()
        with self._lock:
            self._closed.set()
            worker = self._worker
        self._wake.set()
        if worker is not None:
            worker.join()
        if self._handle is None:  # displayed by its caller, who keeps the widgets: the last state drawn
            self.flush()
            return
        self._handle.update(BatchPage(self.progress))
        self.release()

    # -- drawing ----------------------------------------------------------------------------------------------------
    def _changed(self, index: int) -> None:
        with self._lock:
            self._dirty.add(index)
            if self._worker is None and not self._closed.is_set():
                self._worker = threading.Thread(target=self._run, name="rlm-batch-view", daemon=True)
                self._worker.start()
        self._wake.set()

    def _maybe_row(self, index: int) -> bool:
        """Whether question `index` has a row: one of the first ROWS_SHOWN, or a failed one while there is room."""
        if index in self._rows or index in self._shown:
            return True
        failed = self.progress.questions[index].state == "failed"
        if index >= ROWS_SHOWN and not (failed and self._failed_rows < ROWS_SHOWN):
            return False
        self._failed_rows += index >= ROWS_SHOWN
        bisect.insort(self._shown, index)
        self._dirty.add(index)
        return True

    def flush(self) -> None:
        """Draw the rows that changed since the last flush, and the header."""
        with self._flush_lock:
            with self._lock:
                dirty = sorted(i for i in self._dirty if self._maybe_row(i))
                self._dirty = set()
                shown = list(self._shown)
            header = header_html(self.progress)
            titles = {
                i: f"{STATUS_ICONS.get(self.progress.questions[i].status, '•')} {self.progress.row(i)}" for i in dirty
            }
            trees = {i: self.progress.tree_html(i) for i in dirty}
            # Widgets change outside the lock: sending comm messages must not hold up the batch.
            if header != self._header.value:
                self._header.value = header
            added = False
            for index in dirty:
                if index not in self._rows:
                    tree = widgets.HTML()
                    self._rows[index] = (widgets.Accordion(children=[tree], titles=("",), selected_index=None), tree)
                    added = True
                accordion, tree = self._rows[index]
                accordion.titles = (titles[index],)
                if tree.value != trees[index]:
                    tree.value = trees[index]
            if added:
                self._rows_box.children = tuple(self._rows[i][0] for i in shown if i in self._rows)
            hidden = len(self.progress.questions) - len(shown)
            more = f"<i>{msg.BATCH_ROWS_HIDDEN.format(count=hidden)}</i>" if hidden > 0 else ""
            if more != self._more.value:
                self._more.value = more

    def _run(self) -> None:
        while not self._closed.is_set():
            if not self._wake.wait(TICK_S):  # no event for a while: the clock still moves
                with self._lock:
                    self._dirty.update(i for i in self._shown if self.progress.questions[i].state == "running")
            if self._closed.wait(self.throttle_s):  # gathers a batch of events; close() draws no more
                return
            self._wake.clear()
            self.flush()

    def release(self) -> None:
        """Close every widget model of the view (and their layouts and styles): the kernel and the frontend let go."""
        close_widgets(self._root)
        self._rows.clear()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = self._root._repr_mimebundle_() or {}
        # Without widget state (nbconvert, GitHub, a terminal) the page or the outline stands in.
        return {**bundle, **BatchPage(self.progress)._repr_mimebundle_()}


def show_batch_view(queries: list[str], kept: Mapping[int, RLMResult]) -> BatchView | None:
    """A batch's live view, shown in this kernel's frontend; None outside a kernel (a terminal IPython, a script)."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    return BatchView(queries, kept).show()
