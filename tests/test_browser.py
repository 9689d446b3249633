"""What a person sees: a `%%rlm` cell run in JupyterLab, in a real browser (Debian's chromium).

The model is a policy behind `rlm serve-model` (a ModelServer in this process) that recurses
to depth 2: root -> child RLM -> grandchild RLM. Gates hold the child's and the grandchild's
first replies until the page has shown the tree growing, so "the tree updates while the cell
runs" is checked on events, not on timing. Screenshots go to build/test-artifacts/browser/;
with RLM_DOCS_SCREENSHOT=PATH (`make screenshot`) the expanded tree is also copied to PATH.
"""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbconvert import HTMLExporter
from playwright.sync_api import Locator, expect

from rlm_kernel.jupyter.run_notebook import run_notebook
from rlm_kernel.models.server import ModelServer
from tests.browser_support import ARTIFACTS, JupyterLab, chromium_page, require_chromium, write_notebook
from tests.conftest import repl

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

SHOTS = ARTIFACTS / "browser"
DOC = "\n".join(
    [
        "06:00 solar-array OK",
        "07:30 coolant-pump FAIL pressure drop in loop B",
        "07:45 coolant-pump OK after seal replaced",
        "12:10 radio OK",
        "15:20 heater FAIL thermostat stuck",
        "15:50 heater OK after thermostat reset",
    ]
)
ROOT_Q = "Which system failed first, and when?"
CHILD_Q = "Which system failed in these lines?"
GRAND_Q = "Name the system in this line."
# Distinctive lines of model-written code and output, looked for in the page and the HTML export.
CHILD_CODE = 'flagged = [line for line in context.splitlines() if " FAIL " in line]'
CHILD_OUTPUT = "child: 1 FAIL line(s) -> coolant-pump"
GRAND_OUTPUT = "grandchild read: coolant-pump"
ROOT_VARIABLES = "variables made by the model: lines, first_half, failed"
ANSWER_BOLD = "coolant-pump"

CODE = {
    ROOT_Q: (
        "lines = context.splitlines()\n"
        'first_half = "\\n".join(lines[: len(lines) // 2])\n'
        f"failed = rlm_query(first_half, {CHILD_Q!r})\n"
        'print(len(lines), "lines; first half ->", failed)',
        'FINAL(f"**{failed}** failed first, in the first half of the log.")',
    ),
    CHILD_Q: (
        f"{CHILD_CODE}\n"
        f'system = rlm_query("\\n".join(flagged), {GRAND_Q!r})\n'
        'print("child:", len(flagged), "FAIL line(s) ->", system)',
        "FINAL(system)",
    ),
    GRAND_Q: ('name = context.split()[1]\nprint("grandchild read:", name)', "FINAL(name)"),
}


class DepthTwoPolicy:
    """Root and child each start one child RLM; the grandchild answers. Two replies per node.

    `gates[question]` (when given) holds that node's first reply until the test opens it.
    """

    def __init__(self, gates: dict[str, threading.Event] | None = None) -> None:
        self.gates = gates or {}

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        # Every call here is an RLM node's (the depth limit is never reached), so messages[1] is its question.
        question = messages[1]["content"].split("\n", 1)[0].removeprefix("Question: ")
        first, second = CODE[question]
        if len(messages) > 2:
            return repl(second, prose="Submitting.")
        gate = self.gates.get(question)
        if gate is not None:
            gate.wait(90)  # opened by the test; the timeout only stops a failed test from hanging
        return repl(first, prose=f"Looking at the context for: {question}")


def notebook_cells(api_base: str) -> list[str]:
    return [
        f'doc = """{DOC}"""',
        f"%%rlm --context doc --model openai/policy --api-base {api_base} --depth 3\n{ROOT_Q}",
    ]


class _DetailsNesting(html.parser.HTMLParser):
    """For each call-node <summary> in a static tree: (nesting level of <details>, node id, depth)."""

    def __init__(self) -> None:
        super().__init__()
        self.level = 0
        self.summary: list[str] | None = None
        self.nodes: list[tuple[int, str, int]] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "details":
            self.level += 1
        elif tag == "summary":
            self.summary = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "details":
            self.level -= 1
        elif tag == "summary" and self.summary is not None:
            match = re.search(r"\b(n\d+) · d(\d+) · ", "".join(self.summary))
            if match:  # llm_query summaries have no node id
                self.nodes.append((self.level, match.group(1), int(match.group(2))))
            self.summary = None

    def handle_data(self, data: str) -> None:
        if self.summary is not None:
            self.summary.append(data)


def check_static_tree(page: str) -> None:
    """The HTML shows the 3-level <details> tree with the model's code and output, not a widget."""
    assert "Error displaying widget" not in page
    parser = _DetailsNesting()
    parser.feed(page)
    assert [(level, depth) for level, _, depth in parser.nodes] == [(1, 0), (2, 1), (3, 2)], parser.nodes
    text = html.unescape(re.sub(r"<[^>]+>", "", page))  # highlighted code is split by tags
    for shown in (CHILD_CODE, CHILD_OUTPUT, GRAND_OUTPUT, ROOT_VARIABLES):
        assert shown in text


@pytest.fixture
def gates() -> Iterator[dict[str, threading.Event]]:
    events = {CHILD_Q: threading.Event(), GRAND_Q: threading.Event()}
    yield events
    for event in events.values():  # a failed test must not leave server threads waiting
        event.set()


def test_call_tree_in_jupyterlab(tmp_path: Path, gates: dict[str, threading.Event]) -> None:
    require_chromium()  # fail before the slow start-up when the browser is missing
    SHOTS.mkdir(parents=True, exist_ok=True)
    root_dir = tmp_path / "notebooks"
    root_dir.mkdir()
    with ModelServer(DepthTwoPolicy(gates), latency_ms=300) as server:
        notebook = write_notebook(root_dir / "call_tree.ipynb", notebook_cells(server.url))
        with JupyterLab(root_dir, tmp_path / "jupyter", SHOTS / "jupyterlab.log") as lab, chromium_page() as page:
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)  # generous: kernel start and litellm's import are slow on 2 cores
            page.goto(lab.notebook_url(notebook.name))
            panel = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
            cells = panel.locator(".jp-Cell")
            # The notebook's kernelspec picks the `rlm` kernel; the status bar says when it is up.
            expect(page.locator(".jp-StatusBar-TextItem", has_text="Python 3 (RLM) | Idle")).to_have_count(1)
            cells.first.click()
            page.keyboard.press("Shift+Enter")
            page.keyboard.press("Shift+Enter")

            cell = cells.nth(1)
            prompt = cell.locator(".jp-InputArea-prompt")
            accordions = cell.locator(".jupyter-widget-Accordion")
            titles = cell.locator(".jupyter-widget-Collapse-header span")
            # The child's first reply is held: the tree has grown to two running nodes, the cell is still running.
            expect(accordions).to_have_count(2)
            expect(titles.nth(1)).to_have_text(_title("running", 1, CHILD_Q))
            expect(prompt).to_have_text("[*]:")
            # While its model call is held, the child says what it waits for, and its elapsed time moves.
            expect(titles.nth(1)).to_contain_text("waiting for openai/policy, iteration 1")
            first = _elapsed(titles.nth(1).inner_text())
            expect(titles.nth(1)).not_to_have_text(re.compile(rf"· {first:.1f} s$"))
            assert _elapsed(titles.nth(1).inner_text()) > first
            expect(cell.locator(".widget-html-content", has_text="RLM run").first).to_contain_text(
                "running · 2 RLM calls"
            )
            page.screenshot(path=SHOTS / "1-running-two-nodes.png")
            gates[CHILD_Q].set()
            expect(accordions).to_have_count(3)
            expect(titles.nth(2)).to_have_text(_title("running", 2, GRAND_Q))
            expect(titles.nth(0)).to_have_text(_title("running", 0, ROOT_Q))
            expect(prompt).to_have_text("[*]:")
            page.screenshot(path=SHOTS / "2-running-three-nodes.png")
            gates[GRAND_Q].set()

            expect(prompt).to_have_text("[2]:")
            for depth, question in enumerate((ROOT_Q, CHILD_Q, GRAND_Q)):
                expect(titles.nth(depth)).to_have_text(_title("done", depth, question))
            expect(accordions).to_have_count(3)
            # The answer as the model wrote it: its Markdown stars stay stars.
            answer = cell.locator('.jp-OutputArea-output[data-mime-type="text/plain"]').last
            expect(answer).to_have_text(f"**{ANSWER_BOLD}** failed first, in the first half of the log.")
            expect(cell.locator(".widget-html-content", has_text="variables made by the model").first).to_have_text(
                re.compile(re.escape(ROOT_VARIABLES) + r"$")
            )
            page.screenshot(path=SHOTS / "3-done.png")

            child = _node(cell, 1)
            child_body = child.locator(":scope > .jupyter-widget-Collapse-contents")
            expect(child_body).to_be_hidden()
            child.locator(":scope > .jupyter-widget-Collapse-header").click()
            expect(child_body).to_be_visible()
            child_details = child_body.locator(".widget-html-content").first
            expect(child_details.locator("pre", has_text="flagged = [line")).to_have_text(
                re.compile(re.escape(CHILD_CODE))
            )
            expect(child_details.locator("pre", has_text=CHILD_OUTPUT)).to_be_visible()
            grandchild = _node(cell, 2)
            grandchild.locator(":scope > .jupyter-widget-Collapse-header").click()
            expect(grandchild.locator("pre", has_text=GRAND_OUTPUT)).to_be_visible()
            # The README shot: sidebar closed, the cell toolbar moved off this cell, and a viewport
            # tall enough for the whole cell to fit unscrolled.
            page.get_by_role("tab", name=re.compile(r"^File Browser")).click()
            cells.nth(2).click()
            page.set_viewport_size({"width": 1200, "height": 2000})
            page.screenshot(path=SHOTS / "4-expanded.png")
            cell.screenshot(path=SHOTS / "call_tree.png")
            docs_copy = os.environ.get("RLM_DOCS_SCREENSHOT")
            if docs_copy:
                Path(docs_copy).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(SHOTS / "call_tree.png", docs_copy)

            # Saved by JupyterLab (no widget state by default), the notebook converts to the static tree.
            dirty_tab = page.locator(".lm-TabBar-tab.jp-mod-current.jp-mod-dirty")
            expect(dirty_tab).to_have_count(1)
            page.keyboard.press("Control+s")
            expect(dirty_tab).to_have_count(0)
    saved = nbformat.read(notebook, as_version=4)
    page_html, _ = HTMLExporter().from_notebook_node(saved)
    (SHOTS / "call_tree.html").write_text(page_html, encoding="utf-8")
    check_static_tree(page_html)


def _title(status: str, depth: int, question: str) -> re.Pattern[str]:
    """A node's accordion title: status icon, status, node id, depth, model, question, then figures."""
    return re.compile(rf"^\S+ {status} · n\d+ · d{depth} · openai/policy · {re.escape(question)} · ")


def _elapsed(title: str) -> float:
    match = re.search(r"· (\d+\.\d) s$", title)
    assert match, title
    return float(match.group(1))


def _node(cell: Locator, depth: int) -> Locator:
    """The widget (a Collapse) of the call node at `depth` in this cell's tree."""
    header = cell.page.locator(".jupyter-widget-Collapse-header", has_text=f" · d{depth} · ")  # `has` is relative
    return cell.locator(".jupyter-widget-Collapse", has=header).last  # the innermost one holding that header


def test_headless_run_exports_the_details_tree(tmp_path: Path) -> None:
    """The same notebook executed by nbclient (widget state saved) and exported by run_notebook."""
    with ModelServer(DepthTwoPolicy()) as server:
        notebook = write_notebook(tmp_path / "call_tree.ipynb", notebook_cells(server.url))
        executed = run_notebook(notebook, tmp_path / "out", timeout=120)
    assert executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    check_static_tree((tmp_path / "out" / "call_tree.html").read_text(encoding="utf-8"))
