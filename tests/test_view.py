"""The call-tree views: the static HTML page and the live widget tree, fed by real runs and synthetic events."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import ipywidgets as widgets
import nbconvert
import nbformat
import pytest

from rlm_kernel import RLM
from rlm_kernel.core import Event, Trace, Usage
from rlm_kernel.core.repl import NamespaceREPL
from rlm_kernel.formats.html import node_summary, render_html, render_node_html
from rlm_kernel.formats.theme import STATUS_COLOURS
from rlm_kernel.jupyter.view import TraceView
from tests.conftest import question_of, repl
from tests.test_engine import DOC, _depth_policy

# The view draws from its own thread: an exception there is a failure, not a warning.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

SCRIPT = "<script>alert(1)</script>"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


# -- traces ---------------------------------------------------------------------------------------


def _depth_two_run(scripted, **kwargs: Any):
    return RLM(model=scripted(_depth_policy), max_depth=3, **kwargs).completion("abcdefgh" * 100, "top <question>")


def _feature_run(scripted, **kwargs: Any):
    """A root that makes variables, rebinds one it found, calls a sub-model, hits an error and prints markup."""
    model = scripted(
        [
            repl(
                "a = 1\nold = 'mine'\nv = llm_query('say <hi>')\nprint(v)",
                prose="First I ask the sub-model <b>politely</b>.",
            ),
            repl("b = 1/0"),
            repl(f"print({SCRIPT!r})\nFINAL('answer <i>ok</i>')"),
        ]
    )
    sub = scripted(lambda messages: "hello <back>")
    rlm = RLM(model=model, sub_model=sub, **kwargs)
    return rlm.completion(DOC, "What is <this>?", repl=NamespaceREPL({"old": "the user's"}))


def _batched_policy(messages: list[dict[str, Any]]) -> str:
    """Root starts 8 children at once; each child fans out 4 sub-model calls, then answers."""
    if messages[0]["role"] != "system":
        return "sub:" + messages[-1]["content"]
    question = question_of(messages)
    if question == "root":
        if len(messages) > 2:
            return repl("FINAL(outs)")
        return repl("outs = rlm_query_batched([(str(i) * 10, f'child {i}') for i in range(8)])")
    if len(messages) > 2:
        return repl("FINAL(replies[0])")
    return repl(
        "import time\ntime.sleep(0.01)\nreplies = llm_query_batched([context + str(k) for k in range(4)])\nprint(replies)"
    )


def _budget_run(scripted, **kwargs: Any):
    def policy(messages):
        if messages[0]["role"] != "system":
            return "sub reply"
        if messages[1]["content"].startswith("Question: root"):
            if len(messages) > 2:
                return repl("FINAL('root done')")
            return repl("outs = rlm_query_batched([('ctx', f'child {i}') for i in range(3)])\nprint(outs)")
        return repl("print(llm_query_batched(['x'] * 3))")

    return RLM(model=scripted(policy), max_depth=2, max_llm_calls=8, **kwargs).completion(DOC, "root")


def _synthetic_events(parent_of: dict[str, str | None], *, depth: int = 0, cost_known: bool = True) -> list[Event]:
    """Valid events for a (sub)tree given as {node: parent}: each node runs one cell with an llm_query and its children."""
    children: dict[str, list[str]] = {node: [] for node in parent_of}
    for node, parent in parent_of.items():
        if parent in children:
            children[parent].append(node)
    usage = Usage(1, 100, 20, 0.0001, cost_known).to_dict()

    def steps(node: str, depth: int) -> Iterator[Event | tuple[str, int]]:
        parent = parent_of[node]

        def ev(event_kind: str, /, **data: Any) -> Event:
            return Event(event_kind, node, parent, data)

        code = f"x_{node} = llm_query('part {node}')\nprint(len(x_{node}))"
        yield ev(
            "call_start",
            depth=depth,
            model="m",
            query=f"question of {node}",
            context={"summary": "10 chars"},
            system_prompt="",
            user_prompt="",
        )
        yield ev(
            "iteration",
            index=0,
            reply=f"Looking at {node}.\n```repl\n{code}\n```",
            blocks=1,
            fabricated_output=False,
            model="m",
            usage=usage,
            seconds=0.1,
        )
        yield ev(
            "subcall_start",
            subcall_id=f"{node}-s",
            kind="llm",
            model="m",
            prompt_preview=f"part {node}",
            prompt_chars=9,
            iteration=0,
            block=0,
        )
        yield ev("subcall_end", subcall_id=f"{node}-s", reply="ok", error=None, usage=usage, seconds=0.1)
        for child in children[node]:
            yield ev(
                "subcall_start",
                subcall_id=f"{child}-c",
                kind="rlm",
                child_id=child,
                model="m",
                prompt_preview=f"question of {child}",
                prompt_chars=20,
                iteration=0,
                block=0,
            )
            yield (child, depth + 1)
            yield ev(
                "subcall_end", subcall_id=f"{child}-c", reply=f"answer of {child}", error=None, usage=usage, seconds=0.1
            )
        yield ev(
            "code_result",
            iteration=0,
            index=0,
            code=code,
            output="2",
            stdout="2\n",
            stderr="",
            value=None,
            error=None,
            seconds=0.01,
            created=[f"x_{node}"],
            rebound=[],
            submitted=False,
        )
        yield ev("call_end", status="done", answer=f"answer of {node}", error=None, limit=None, seconds=0.5)

    root = next(node for node, parent in parent_of.items() if parent not in parent_of)
    events: list[Event] = []
    stack = [steps(root, depth)]  # a stack, not recursion: the chain test goes deeper than the recursion limit
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
        elif isinstance(item, Event):
            events.append(item)
        else:
            stack.append(steps(*item))
    return events


def _fanout(count: int, fanout: int = 10) -> dict[str, str | None]:
    return {f"n{i}": None if i == 0 else f"n{(i - 1) // fanout}" for i in range(count)}


# -- reading HTML back --------------------------------------------------------------------------


class _TreeReader(HTMLParser):
    """Checks that tags nest properly and records which node's <details> each node's <details> sits in."""

    VOID = {"br", "img", "hr", "meta", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[list[Any]] = []  # [tag, node id or None]
        self.parent_of: dict[str, str | None] = {}
        self.in_summary = False
        self.summary = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append([tag, None])
        if tag == "summary":
            self.in_summary, self.summary = True, ""

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1][0] == tag, f"</{tag}> closes {self.stack[-1:]!r}"
        self.stack.pop()
        if tag == "summary":
            self.in_summary = False
            found = re.match(
                r"\s*(?:running|done|error|budget|interrupted|max_iterations) (\S+) · d\d+ ·", self.summary
            )
            if found:  # a node's summary, not a sub-model call's
                node_id = found.group(1)
                details = self.stack[-1]
                details[1] = node_id
                self.parent_of[node_id] = next((d[1] for d in reversed(self.stack[:-1]) if d[1]), None)

    def handle_data(self, data: str) -> None:
        if self.in_summary:
            self.summary += data


def _read_tree(page: str) -> dict[str, str | None]:
    reader = _TreeReader()
    reader.feed(page)
    reader.close()
    assert reader.stack == [], "unclosed tags"
    return reader.parent_of


def _tree_of(trace: Trace) -> dict[str, str | None]:
    return {node.id: node.parent_id for node in trace.walk()}


def _has_badge(page: str, status: str, after: str = "") -> bool:
    return re.search(f'background:{STATUS_COLOURS[status]};color:#fff[^"]*">{status}</span>{after}', page) is not None


# -- the static page ----------------------------------------------------------------------------


def test_page_nests_every_node_under_its_parent(scripted):
    result = _depth_two_run(scripted)
    page = render_html(result.trace)
    assert page.count("<details") == page.count("</details>") == len(result.trace.nodes) + 1  # and the timeline's
    assert _read_tree(page) == _tree_of(result.trace)
    assert len(result.trace.nodes) == 3
    assert page.count("<details open") == 1 and page.index("<details open") == page.index("<details")


def test_page_shows_prose_code_outputs_sub_calls_and_escapes_everything(scripted):
    result = _feature_run(scripted)
    page = render_html(result.trace)
    assert SCRIPT not in page and "<i>ok</i>" not in page and "<this>" not in page and "<hi>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the printed output and the highlighted code
    assert "First I ask the sub-model &lt;b&gt;politely&lt;/b&gt;." in page  # prose, fences removed
    assert "```" not in page
    assert "What is &lt;this&gt;?" in page
    assert "answer &lt;i&gt;ok&lt;/i&gt;" in page
    assert (
        'style="color: var(--jp-mirror-editor-builtin-color,#008000)">print</span>' in page
    )  # the theme's colours inline
    assert "<style" not in page and "<script" not in page and "class=" not in page
    # The llm_query sits in its own collapsed <details> inside the root: prompt, length, reply.
    assert _read_tree(page) == {"n0": None}
    sub = re.search(r"<details[^>]*><summary[^>]*>llm_query · (.*?)</details>", page, re.S)
    assert (
        sub and "8 chars" in sub.group(1) and "say &lt;hi&gt;" in sub.group(1) and "hello &lt;back&gt;" in sub.group(1)
    )
    assert (
        page.index("iteration 1 ·") < page.index("llm_query · ") < page.index("iteration 2 ")
    )  # in its cell (then a FINAL badge)


def test_page_error_cells_and_the_variables_line(scripted):
    result = _feature_run(scripted)
    page = render_html(result.trace)
    error_pre = re.search(r'<pre style="[^"]*rendermime-error-background[^"]*">([^<]*)</pre>', page)
    assert error_pre and "ZeroDivisionError" in error_pre.group(1)
    assert "variables made by the model: a, v (rebound: old)" in page


def test_status_badges_have_distinct_colours_and_stopped_runs_show_why(scripted):
    assert len(set(STATUS_COLOURS.values())) == len(STATUS_COLOURS)
    budget = _budget_run(scripted)
    page = render_html(budget.trace)
    assert budget.status == "budget"
    assert _has_badge(page, "budget", " n0")
    assert "budget exhausted (max_llm_calls)" in page
    assert _read_tree(page) == _tree_of(budget.trace)

    calls = []

    def failing(messages):
        calls.append(1)
        if len(calls) == 1:
            return repl("print('step one')")
        raise RuntimeError("provider <down>")

    failed = RLM(model=scripted(failing), retries=0).completion(DOC, "q")
    page = render_html(failed.trace)
    assert failed.status == "error"
    assert _has_badge(page, "error", " n0")
    assert re.search(
        r'<pre style="[^"]*rendermime-error-background[^"]*">model call failed: [^<]*provider &lt;down&gt;', page
    )


def test_a_running_trace_shows_running_nodes_and_sub_calls(scripted):
    result = _feature_run(scripted)
    events = result.trace.events
    cut = next(i for i, e in enumerate(events) if e.kind == "subcall_start") + 1
    page = render_html(Trace.from_events(events[:cut]))
    assert _has_badge(page, "running", " n0") and _has_badge(
        page, "running", "</summary>"
    )  # the node and its llm_query
    assert "code block 1 of 1 running:" in page and "llm_query" in page and "say &lt;hi&gt;" in page
    running_code = page[page.index("code block 1 of 1 running:") :]
    code = running_code.split("</pre>")[0]  # the block's code, shown before its output exists
    assert "<pre" in code and "say &lt;hi&gt;" in code and ">llm_query<" in code
    assert "cell" not in re.sub(r"<[^>]+>", "", page).replace("rlm-cell", "")
    assert _read_tree(page) == {"n0": None}
    assert render_html(Trace()).count("no calls yet") == 1


def test_summary_line_shortens_the_question_and_knows_unknown_costs():
    trace = Trace.from_events(_synthetic_events({"n0": None, "n1": "n0"}, cost_known=False))
    trace.nodes["n0"].query = "why " * 100
    line = node_summary(trace, trace.root)
    assert line.startswith("done · n0 · d0 · m · why why")
    assert "…" in line and len(line) < 240  # the node's own usage and its subtree's, each labelled
    assert "1 it · this node: 2 model calls, 200+40 tok, $0.0002 + unknown" in line
    assert "with children: 4 model calls, 400+80 tok, $0.0004 + unknown" in line  # two nodes, two calls each
    known = Trace.from_events(_synthetic_events({"n0": None}))
    assert "$0.0002" in node_summary(known, known.root)


def test_a_thousand_nodes_render_fast():
    trace = Trace.from_events(_synthetic_events(_fanout(1000)))
    started = time.perf_counter()
    page = render_html(trace)
    seconds = time.perf_counter() - started
    print(f"render_html of {len(trace.nodes)} nodes: {seconds:.3f} s, {len(page) / 1e6:.1f} MB")
    assert seconds < 3.0
    assert _read_tree(page) == _tree_of(trace)


def test_a_chain_deeper_than_the_recursion_limit_renders():
    trace = Trace.from_events(_synthetic_events({f"n{i}": None if i == 0 else f"n{i - 1}" for i in range(1500)}))
    page = render_html(trace)
    assert page.count("<details") == page.count("</details>") == 1500 * 2 + 1  # each node, its llm_query; a timeline


# -- the widget tree ----------------------------------------------------------------------------


def _accordions(box: widgets.Box, parent: str | None = None) -> Iterator[tuple[str, str | None, widgets.Accordion]]:
    for accordion in box.children:
        assert isinstance(accordion, widgets.Accordion) and len(accordion.children) == 1
        node_id = accordion.titles[0].split(" · ")[1]
        yield node_id, parent, accordion
        _, children = accordion.children[0].children
        yield from _accordions(children, node_id)


def _assert_view_matches(view: TraceView, trace: Trace) -> None:
    """One accordion per node, under its parent, with the final title and details."""
    found = list(_accordions(view.tree))
    assert {node_id: parent for node_id, parent, _ in found} == _tree_of(trace)
    assert len(found) == len(trace.nodes)
    for node_id, _, accordion in found:
        node = trace.nodes[node_id]
        assert node_summary(trace, node) in accordion.titles[0]
        assert accordion.selected_index == (0 if node.depth == 0 else None)
        drawn = accordion.children[0].children[0].value
        assert _clock_free(drawn) == _clock_free(render_node_html(trace, node_id))


def _clock_free(text: str) -> str:
    """Without the elapsed times of running nodes, which move between two renderings."""
    return re.sub(r"\b\d+\.\d s\b", "_ s", text)


def test_widget_view_follows_a_real_run_event_by_event(scripted, capsys):
    view = TraceView()
    result = _depth_two_run(scripted, on_event=view)
    view.close()
    assert "event handler failed" not in capsys.readouterr().err
    assert view.trace.outline() == result.trace.outline()
    _assert_view_matches(view, result.trace)
    titles = [a.titles[0] for _, _, a in _accordions(view.tree)]
    assert all(t.startswith("✅ done · n") for t in titles)
    root_details = view.tree.children[0].children[0].children[0].value
    assert "child RLM <b>n1</b>" in root_details and "<details" not in root_details  # children are widgets


def test_every_flush_leaves_the_widgets_in_step_with_the_trace(scripted):
    result = _depth_two_run(scripted)
    view = TraceView(throttle_s=60)  # the worker never gets to flush: each flush below is ours
    for event in result.trace.events:
        view(event)
        view.flush()
        _assert_view_matches(view, view.trace)  # ancestors' subtree totals included
    view.close()


def test_mimebundle_has_the_widget_the_page_and_the_outline(scripted):
    view = TraceView()
    result = _feature_run(scripted, on_event=view)
    view.close()
    bundle = view._repr_mimebundle_()
    assert bundle[WIDGET_MIME]["model_id"] == view.widget.model_id
    assert bundle["text/html"] == render_html(result.trace)
    assert bundle["text/plain"] == result.trace.outline()
    assert TraceView()._repr_mimebundle_()["text/plain"] == "RLM trace: no calls yet"


def test_nbconvert_without_widget_state_shows_the_html_tree(scripted):
    view = TraceView()
    _depth_two_run(scripted, on_event=view)
    view.close()
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("%%rlm\ntop")
    cell.outputs = [nbformat.v4.new_output("display_data", data=view._repr_mimebundle_())]
    notebook.cells.append(cell)
    page, _ = nbconvert.HTMLExporter().from_notebook_node(notebook)
    assert page.count("<details") == 3 + 1 and "n2 · d2 · " in page  # the nodes and the timeline's fold


def test_stopped_runs_end_with_their_status_in_the_titles(scripted):
    view = TraceView()
    result = _budget_run(scripted, on_event=view)
    view.close()
    assert result.status == "budget"
    _assert_view_matches(view, result.trace)
    assert view.tree.children[0].titles[0].startswith("💰 budget · n0")


def test_a_finished_view_gives_way_to_the_static_tree_with_the_users_open_nodes_and_closes_its_widgets(scripted):
    from ipywidgets.widgets.widget import _instances

    before = set(_instances)
    view = TraceView()
    result = _depth_two_run(scripted, on_event=view)
    view.close()
    child = next(n for n in result.trace.nodes.values() if n.depth == 1)
    view.tree.children[0].children[0].children[1].children[0].selected_index = 0  # the user opens the child
    page = view.static()._repr_mimebundle_()["text/html"]
    assert page == render_html(view.trace, [result.trace.root_id, child.id])
    assert page.count("<details open") == 2
    assert len(set(_instances) - before) > 10
    view.release()
    assert set(_instances) - before == set()  # every model, layouts and styles included, is closed


def test_flushes_are_throttled_and_close_draws_the_rest():
    events = _synthetic_events(_fanout(260))
    assert len(events) >= 2000
    view = TraceView(throttle_s=0.1)
    flushes: list[str] = []  # the thread each flush ran in
    real_flush = view.flush

    def counting_flush() -> None:
        flushes.append(threading.current_thread().name)
        real_flush()

    view.flush = counting_flush  # type: ignore[method-assign]
    started = time.perf_counter()
    for event in events:
        view(event)
    feeding = time.perf_counter() - started
    deadline = time.monotonic() + 5
    while not view.tree.children and time.monotonic() < deadline:  # the worker draws without close()
        time.sleep(0.01)
    assert view.tree.children
    by_worker = list(flushes)
    view.close()
    view.close()
    print(f"{len(events)} events fed in {feeding:.3f} s, {len(flushes)} flushes")
    assert set(by_worker) == {"rlm-trace-view"}  # never in the caller's thread
    assert len(flushes) <= feeding / 0.1 + 4
    _assert_view_matches(view, view.trace)
    assert len(view.trace.nodes) == 260


def test_events_after_close_are_still_drawn():
    events = _synthetic_events({"n0": None})
    view = TraceView()
    for event in events[:-1]:
        view(event)
    view.close()
    assert view.tree.children[0].titles[0].startswith("⏳ running · n0")
    view(events[-1])
    assert view.tree.children[0].titles[0].startswith("✅ done · n0")


def test_eight_child_threads_build_a_complete_view(scripted, capsys):
    view = TraceView(throttle_s=0.002)  # flush often, so drawing overlaps the events
    emitters: set[str] = set()
    handlers = [view, lambda event: emitters.add(threading.current_thread().name)]
    result = RLM(model=scripted(_batched_policy), max_depth=2, concurrency=8, on_event=handlers).completion(
        "root context", "root"
    )
    view.close()
    assert "event handler failed" not in capsys.readouterr().err
    assert len({name for name in emitters if name.startswith("rlm-n0")}) == 8  # one thread a child, besides the others
    assert result.status == "done" and len(result.answer) == 8
    assert len(result.trace.nodes) == 9
    _assert_view_matches(view, result.trace)
    assert view.trace.outline() == result.trace.outline()


@pytest.mark.parametrize("throttle_s", [0.0, 0.01])
def test_events_fed_from_eight_raw_threads_at_once(throttle_s):
    # Unlike the engine, these threads do not take turns: only the view's own lock orders them.
    subtrees = [
        _synthetic_events({f"n{t}_{i}": "n0" if i == 0 else f"n{t}_{(i - 1) // 3}" for i in range(40)}, depth=1)
        for t in range(8)
    ]
    root = _synthetic_events({"n0": None})
    root_head, root_rest = root[:4], root[4:]  # the root's cell ends after its children
    view = TraceView(throttle_s=throttle_s)
    for event in root_head:
        view(event)
    barrier = threading.Barrier(8)

    def feed(events: list[Event]) -> None:
        child = events[0].node_id
        barrier.wait()
        view(
            Event(
                "subcall_start",
                "n0",
                None,
                dict(
                    subcall_id=f"{child}-c",
                    kind="rlm",
                    child_id=child,
                    model="m",
                    prompt_preview="q",
                    prompt_chars=1,
                    iteration=0,
                    block=0,
                ),
            )
        )
        for event in events:
            view(event)
        view(
            Event(
                "subcall_end",
                "n0",
                None,
                dict(subcall_id=f"{child}-c", reply="a", error=None, usage=Usage().to_dict(), seconds=0.1),
            )
        )

    threads = [threading.Thread(target=feed, args=(events,)) for events in subtrees]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for event in root_rest:
        view(event)
    view.close()
    assert len(view.trace.nodes) == 1 + 8 * 40
    _assert_view_matches(view, view.trace)
    assert _read_tree(render_html(view.trace)) == _tree_of(view.trace)


def test_live_children_stand_in_index_order_whatever_order_they_start_in():
    """Children of a batch start as slots free up, not in index order: the tree places them by their sub-call."""

    def start(node: str, parent: str | None, depth: int) -> Event:
        data = {
            "depth": depth,
            "model": "m",
            "query": f"q {node}",
            "context": {},
            "system_prompt": "",
            "user_prompt": "",
        }
        return Event("call_start", node, parent, data)

    view = TraceView(throttle_s=0.01)
    view(start("n0", None, 0))
    for index in range(4):
        announced = {"subcall_id": f"s{index}", "kind": "rlm", "child_id": f"n{index + 1}", "model": "m"}
        view(
            Event(
                "subcall_start",
                "n0",
                None,
                {**announced, "prompt_preview": "p", "prompt_chars": 1, "iteration": 0, "block": 0},
            )
        )
    for child in ("n3", "n1", "n4", "n2"):
        view(start(child, "n0", 1))
    view.close()
    (root,) = view.tree.children
    shown = [accordion.titles[0].split(" · ")[1] for accordion in root.children[0].children[1].children]
    assert shown == ["n1", "n2", "n3", "n4"]
    view.release()
