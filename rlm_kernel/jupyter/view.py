"""The live call tree in a notebook: one Accordion per node, fed by engine events."""

from __future__ import annotations

import bisect
import html
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets

from rlm_kernel.core.trace import Event, Trace
from rlm_kernel.formats.html import STATUS_ICONS, node_summary, render_html, render_node_html
from rlm_kernel.formats.links import CellLinks
from rlm_kernel.formats.progress import node_activity, replaced_names, run_totals
from rlm_kernel.jupyter.text import TreePage

# Events that change a node's usage, and so its ancestors' subtree totals in their titles.
_USAGE_EVENTS = frozenset({"model_wait", "iteration", "subcall_end"})
TICK_S = 1.0  # while nodes run, their elapsed time is redrawn this often even when no event comes


@dataclass
class _NodeWidgets:
    accordion: widgets.Accordion
    details: widgets.HTML
    children: widgets.VBox


class TraceView:
    """An engine `on_event` handler that draws the call tree as nested Accordions.

    Events come from any thread (the run's, the asyncio thread of sub-calls, child RLM
    threads); recording one only updates the trace and marks its node dirty under a lock.
    A daemon thread redraws the dirty nodes at most once every `throttle_s` seconds, so
    the engine never waits on the frontend, and every TICK_S while nodes run, so their elapsed
    time moves during a long model call. `close()` draws the final state.

    Above the tree: a header with the run's live totals (and the user's variables the model
    rebound), and buttons that expand or collapse every node.
    """

    def __init__(self, throttle_s: float = 0.1) -> None:
        self.throttle_s = throttle_s
        self._trace = Trace()
        self._links = CellLinks()
        self._lock = threading.Lock()  # the trace, the links and the dirty marks
        self._flush_lock = threading.Lock()  # one flush at a time touches the widgets
        self._new: list[str] = []  # nodes without widgets yet, parents first
        self._dirty_titles: set[str] = set()
        self._dirty_details: set[str] = set()
        self._nodes: dict[str, _NodeWidgets] = {}
        self._ranks: dict[str | None, list[int]] = {}  # parent id -> its children's places in its sub-calls, shown
        self._header = widgets.HTML()
        expand, collapse = (
            widgets.Button(description=label, layout=widgets.Layout(width="auto", height="24px", flex="none"))
            for label in ("expand all", "collapse all")
        )
        expand.on_click(lambda _: self.expand_all(True))
        collapse.on_click(lambda _: self.expand_all(False))
        self._toolbar = widgets.HBox([self._header, expand, collapse], layout=widgets.Layout(align_items="center"))
        self._tree = widgets.VBox()
        self._root = widgets.VBox([self._toolbar, self._tree])
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._worker: threading.Thread | None = None

    @property
    def trace(self) -> Trace:
        return self._trace

    @property
    def widget(self) -> widgets.VBox:
        """The root container: the header and its buttons, then the root node's Accordion once the run starts."""
        return self._root

    @property
    def tree(self) -> widgets.VBox:
        """The box that holds the root node's Accordion."""
        return self._tree

    def expand_all(self, expanded: bool) -> None:
        """Open (or close) every node of the tree."""
        for node in list(self._nodes.values()):
            node.accordion.selected_index = 0 if expanded else None

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._record(event)
            if self._worker is None and not self._closed.is_set():
                self._worker = threading.Thread(target=self._run, name="rlm-trace-view", daemon=True)
                self._worker.start()
        if self._closed.is_set():
            self.flush()  # no worker is left to draw a late event
        else:
            self._wake.set()

    def close(self) -> None:
        """Stop the worker and draw the final state (idempotent)."""
        with self._lock:
            self._closed.set()
            worker = self._worker
        self._wake.set()
        if worker is not None:
            worker.join()
        self.flush()

    def static(self, error_below: bool = False) -> TreePage:
        """The tree without widgets, the nodes the user has open still open: what stays once the run has ended.
        `error_below`: the cell fails with the run's error, which the tree then does not repeat."""
        opened = [node_id for node_id, node in self._nodes.items() if node.accordion.selected_index == 0]
        return TreePage(self._trace, opened, error_below=error_below)

    def release(self) -> None:
        """Close every widget model of the view (and their layouts and styles): the kernel and the frontend let go."""
        close_widgets(self._root)
        self._nodes.clear()
        self._ranks.clear()

    def flush(self) -> None:
        """Draw the nodes that changed since the last flush."""
        with self._flush_lock:
            with self._lock:
                new = [(node_id, self._trace.nodes[node_id].parent_id, self._rank(node_id)) for node_id in self._new]
                titles = {node_id: self._title(node_id) for node_id in self._dirty_titles}
                details = {
                    node_id: render_node_html(self._trace, node_id, self._links) for node_id in self._dirty_details
                }
                self._new, self._dirty_titles, self._dirty_details = [], set(), set()
                header = self._header_html()
            # Widgets change outside the lock: sending comm messages must not hold up the engine.
            if header != self._header.value:
                self._header.value = header
            for node_id, parent_id, rank in new:
                self._add_node(node_id, parent_id, rank)
            for node_id, title in titles.items():
                self._nodes[node_id].accordion.titles = (title,)
            for node_id, value in details.items():
                self._nodes[node_id].details.value = value

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        with self._lock:
            page, outline = render_html(self._trace), self._trace.outline()
        bundle = self._root._repr_mimebundle_() or {}
        # Without widget state (nbconvert, GitHub, a terminal) the HTML or the outline stands in.
        return {**bundle, "text/html": page, "text/plain": outline or "RLM trace: no calls yet"}

    def _record(self, event: Event) -> None:
        self._trace.add(event)
        self._links.add(event)
        if event.kind == "call_start":
            self._new.append(event.node_id)
            if event.parent_id is not None:  # its pointer in the parent's details goes live, its title gains a subtree
                self._dirty_details.add(event.parent_id)
                self._dirty_titles.add(event.parent_id)
        self._dirty_details.add(event.node_id)
        self._dirty_titles.add(event.node_id)
        if event.kind in _USAGE_EVENTS:
            self._dirty_titles.update(self._ancestors(event.node_id))

    def _ancestors(self, node_id: str) -> Iterator[str]:
        parent_id = self._trace.nodes[node_id].parent_id
        while parent_id is not None:
            yield parent_id
            parent_id = self._trace.nodes[parent_id].parent_id

    def _rank(self, node_id: str) -> int:
        """A child's place among its parent's sub-calls (their subcall_start order: the index order of a batch)."""
        parent_id = self._trace.nodes[node_id].parent_id
        if parent_id is None:
            return 0
        subcalls = self._trace.nodes[parent_id].subcalls
        return next((i for i, sub in enumerate(subcalls) if sub.child_id == node_id), len(subcalls))

    def _title(self, node_id: str) -> str:
        node = self._trace.nodes[node_id]
        activity = node_activity(node, time.time())
        title = f"{STATUS_ICONS.get(node.status, '•')} {node_summary(self._trace, node)}"
        return f"{title} · {activity}" if activity else title

    def _header_html(self) -> str:
        root = self._trace.root
        if root is None:
            return ""
        line = f"<b>RLM run</b> {html.escape(run_totals(self._trace, time.time()))}"
        replaced = replaced_names(root)
        if replaced:
            names = ", ".join(f"<code>{html.escape(n)}</code>" for n in replaced)
            line += f" · <b>⚠ rebinds your variables {names}</b> (previous values: rlm_last.replaced)"
        return f'<div style="font-family:system-ui,sans-serif;font-size:13px;margin-right:8px">{line}</div>'

    def _tick(self) -> None:
        """Mark what moves with the clock alone: running nodes' elapsed time, the header's."""
        with self._lock:
            running = [n.id for n in self._trace.nodes.values() if n.status == "running"]
            self._dirty_titles.update(running)
            self._dirty_details.update(n for n in running if self._trace.nodes[n].waiting is not None)

    def _run(self) -> None:
        while not self._closed.is_set():
            if not self._wake.wait(TICK_S):
                self._tick()
            if self._closed.wait(self.throttle_s):  # gathers a batch; close() does the last flush
                return
            self._wake.clear()
            self.flush()

    def _add_node(self, node_id: str, parent_id: str | None, rank: int) -> None:
        """A node's Accordion, among its siblings in index order (children start in any order when they run at once)."""
        details, children = widgets.HTML(), widgets.VBox()
        accordion = widgets.Accordion(
            children=[widgets.VBox([details, children])], titles=("",), selected_index=0 if parent_id is None else None
        )
        self._nodes[node_id] = _NodeWidgets(accordion, details, children)
        parent = self._nodes.get(parent_id) if parent_id else None
        box = parent.children if parent else self._tree
        ranks = self._ranks.setdefault(parent_id, [])
        place = bisect.bisect(ranks, rank)
        ranks.insert(place, rank)
        box.children = (*box.children[:place], accordion, *box.children[place:])


def close_widgets(root: widgets.Widget) -> None:
    """Close `root`, every widget below it, and their layouts and styles (each a widget model of its own)."""
    pending: list[widgets.Widget] = [root]
    while pending:
        widget = pending.pop()
        pending.extend(getattr(widget, "children", ()))
        for part in ("layout", "style"):
            model = getattr(widget, part, None)
            if isinstance(model, widgets.Widget):
                model.close()
        widget.close()
