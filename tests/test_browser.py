"""What a person sees in JupyterLab, in a real browser (Debian's chromium): `%%rlm` cells and an export.

One JupyterLab server and one chromium serve every test here. The model is a policy behind
`rlm serve-model` (a ModelServer in this process). The call-tree test recurses to depth 2: root ->
child RLM -> grandchild RLM, with replies streamed. Gates hold the child's first reply, and the
grandchild's half-written, until the page has shown them, so "the tree updates while the cell runs"
and "text streams into a node before its call ends" are checked on events, not on timing. Screenshots
go to build/test-artifacts/browser/; with RLM_DOCS_SCREENSHOT=PATH (`make screenshot`) the tree with its
grandchild streaming is also copied to PATH.
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
from playwright.sync_api import Browser, Locator, Page, expect

from rlm_kernel import RLM
from rlm_kernel.core.trace import Trace
from rlm_kernel.formats.html import render_html
from rlm_kernel.jupyter.run_notebook import run_notebook
from rlm_kernel.models.policies import register_policy
from rlm_kernel.models.server import ModelServer
from tests.browser_support import ARTIFACTS, JupyterLab, chromium, new_page, require_chromium, write_notebook
from tests.conftest import question_of, repl
from tests.test_export_readers import ENCODED, ledger

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
GRAND_CODE = "name = context.split()[1]"
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
    GRAND_Q: (f'{GRAND_CODE}\nprint("grandchild read:", name)', "FINAL(name)"),
}


class DepthTwoPolicy:
    """Root and child each start one child RLM; the grandchild answers. Two replies per node.

    `gates[question]` (when given) holds that node's first reply until the test opens it: the child's
    before any of it is written, the grandchild's once it has written up to its first line of code.
    """

    def __init__(self, gates: dict[str, threading.Event] | None = None) -> None:
        self.gates = gates or {}

    def __call__(self, messages: list[dict[str, Any]]) -> str | Iterator[str]:
        # Every call here is an RLM node's (the depth limit is never reached), so messages[1] is its question.
        question = question_of(messages)
        first, second = CODE[question]
        if len(messages) > 2:
            return repl(second, prose="Submitting.")
        reply = repl(first, prose=f"Looking at the context for: {question}")
        gate = self.gates.get(question)
        if gate is None:
            return reply
        if question != GRAND_Q:
            gate.wait(90)  # opened by the test; the timeout only stops a failed test from hanging
            return reply
        return _written_up_to(reply, GRAND_CODE, gate)


def _written_up_to(reply: str, mark: str, gate: threading.Event) -> Iterator[str]:
    """The reply streamed up to the end of `mark`, then the rest once `gate` opens."""
    cut = reply.index(mark) + len(mark)
    yield reply[:cut]
    gate.wait(90)
    yield reply[cut:]


def notebook_cells(api_base: str) -> list[str]:
    return [
        f'%config RLMMagics.stream = True\ndoc = """{DOC}"""',
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


# -- one JupyterLab and one chromium for the whole file ----------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    require_chromium()  # fail before the slow start-up when the browser is missing
    SHOTS.mkdir(parents=True, exist_ok=True)
    state = tmp_path_factory.mktemp("lab")
    (state / "notebooks").mkdir()
    with JupyterLab(state / "notebooks", state / "jupyter", SHOTS / "jupyterlab.log") as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with new_page(browser) as opened:
        opened.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)  # generous: kernel start and litellm's import are slow on 2 cores
        yield opened


def open_notebook(page: Page, lab: JupyterLab, name: str) -> Locator:
    """Open `name` in JupyterLab and wait for its kernel; returns its cells."""
    page.goto(lab.notebook_url(name))
    # The notebook's kernelspec picks the `rlm` kernel; the status bar says when it is up.
    expect(page.locator(".jp-StatusBar-TextItem", has_text="Python 3 (RLM) | Idle")).to_have_count(1)
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")


def run_cell(cells: Locator, index: int, prompt: str | None = None) -> Locator:
    """Run one cell (Shift+Enter); with `prompt`, wait until it has finished as that execution count."""
    cell = cells.nth(index)
    cell.locator(".jp-InputArea-editor").click()
    cell.page.keyboard.press("Shift+Enter")
    if prompt is not None:
        expect(cell.locator(".jp-InputArea-prompt")).to_have_text(prompt)
    return cell


# -- the call tree while it grows, streaming, and when done ---------------------------------------


@pytest.fixture
def gates() -> Iterator[dict[str, threading.Event]]:
    events = {CHILD_Q: threading.Event(), GRAND_Q: threading.Event()}
    yield events
    for event in events.values():  # a failed test must not leave server threads waiting
        event.set()


def test_call_tree_in_jupyterlab(lab: JupyterLab, page: Page, gates: dict[str, threading.Event]) -> None:
    with ModelServer(DepthTwoPolicy(gates), latency_ms=300) as server:
        notebook = write_notebook(lab.root_dir / "call_tree.ipynb", notebook_cells(server.url))
        cells = open_notebook(page, lab, notebook.name)
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
        expect(cell.locator(".widget-html-content", has_text="RLM run").first).to_contain_text("running · 2 RLM calls")
        page.screenshot(path=SHOTS / "1-running-two-nodes.png")
        gates[CHILD_Q].set()

        # The grandchild's reply is held half-written: its text is in the node while its call has not ended.
        expect(accordions).to_have_count(3)
        expect(titles.nth(2)).to_have_text(_title("running", 2, GRAND_Q))
        expect(titles.nth(2)).to_contain_text(re.compile(r"openai/policy writing iteration 1 \(\d+ chars\)"))
        expect(titles.nth(0)).to_have_text(_title("running", 0, ROOT_Q))
        child, grandchild = _node(cell, 1), _node(cell, 2)
        child_body = child.locator(":scope > .jupyter-widget-Collapse-contents")
        expect(child_body).to_be_hidden()  # children start closed; a click opens them
        for node in (child, grandchild):
            node.locator(":scope > .jupyter-widget-Collapse-header").click()
        expect(child_body).to_be_visible()
        streamed = grandchild.locator("pre", has_text="Looking at the context for")
        # Streamed text holds back its last word while the reply is held: it may be the start of a secret, which the
        # redactor can only recognise whole (issue 25, item 7).
        shown_so_far = GRAND_CODE.rsplit(" ", 1)[0]
        expect(streamed).to_have_text(
            re.compile(re.escape(f"Looking at the context for: {GRAND_Q}\n```repl\n{shown_so_far}"))
        )
        expect(grandchild.locator(".widget-html-content").first).to_contain_text("writing iteration 1")
        expect(prompt).to_have_text("[*]:")
        # The README shot: sidebar closed, the cell toolbar moved off this cell, and a viewport
        # tall enough for the whole cell to fit unscrolled.
        page.get_by_role("tab", name=re.compile(r"^File Browser")).click()
        cells.nth(2).click()
        page.set_viewport_size({"width": 1200, "height": 2000})
        page.screenshot(path=SHOTS / "2-grandchild-streaming.png")
        cell.screenshot(path=SHOTS / "call_tree.png")
        docs_copy = os.environ.get("RLM_DOCS_SCREENSHOT")
        if docs_copy:
            Path(docs_copy).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHOTS / "call_tree.png", docs_copy)
        gates[GRAND_Q].set()

        expect(prompt).to_have_text("[2]:")
        # The run has ended: the widgets gave way to the static tree, the nodes the user had opened still open.
        expect(accordions).to_have_count(0)
        nodes = cell.locator("details[open] > summary")
        expect(nodes).to_have_count(3)
        for depth, question in enumerate((ROOT_Q, CHILD_Q, GRAND_Q)):
            expect(nodes.nth(depth)).to_have_text(_summary("done", depth, question))
        # The answer as the model wrote it: its Markdown stars stay stars.
        answer = cell.locator('.jp-OutputArea-output[data-mime-type="text/plain"]').last
        expect(answer).to_have_text(f"**{ANSWER_BOLD}** failed first, in the first half of the log.")
        expect(cell.locator("div", has_text=re.compile("^" + re.escape(ROOT_VARIABLES) + "$"))).to_have_count(1)
        # The streamed text gave way to the whole reply: the code the model wrote and what it printed.
        child_details = cell.locator("details[open]").nth(1)
        expect(child_details.locator("pre", has_text="flagged = [line")).to_have_text(re.compile(re.escape(CHILD_CODE)))
        expect(child_details.locator("pre", has_text=CHILD_OUTPUT)).to_be_visible()
        expect(child_details.locator("pre", has_text=GRAND_OUTPUT)).to_be_visible()
        expect(cell.locator("pre", has_text="Looking at the context for")).to_have_count(0)
        page.screenshot(path=SHOTS / "3-done-expanded.png")

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


def _summary(status: str, depth: int, question: str) -> re.Pattern[str]:
    """A node's <summary> in the static tree: status badge, node id, depth, model, question, then figures."""
    return re.compile(rf"^{status} n\d+ · d{depth} · openai/policy · {re.escape(question)} · ")


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


# -- a failed run, an answer as written, a fan-out of 50 children: one notebook, one kernel -------------

WRITTEN = "Revenue grew from $5M in 2023\nto $7M in 2024 | net_income up"
FAN_OUT_Q = "Reverse each word."
FAN_OUT_CHILDREN, ANSWER_AT_ONCE, CONCURRENCY = 50, 10, 4


class NotebookPolicy:
    """A question answered as written, and a fan-out of child RLMs whose later children wait for `hold`."""

    def __init__(self, hold: threading.Event) -> None:
        self.hold = hold

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        question = question_of(messages)
        if question.startswith("part "):
            if int(question.removeprefix("part ")) >= ANSWER_AT_ONCE:
                self.hold.wait(90)  # opened by the test; the timeout only stops a failed test from hanging
            return repl("FINAL(context[::-1])")
        if question == FAN_OUT_Q:
            if len(messages) > 2:
                return repl("FINAL(' '.join(answers))")
            return repl("answers = rlm_query_batched([(w, f'part {i}') for i, w in enumerate(context.split())])")
        return repl(f"FINAL({WRITTEN!r})")


def test_a_failure_an_answer_and_a_fan_out_as_the_user_sees_them(lab: JupyterLab, page: Page) -> None:
    hold = threading.Event()
    refusing = ModelServer(NotebookPolicy(hold), reject_status=401)
    with ModelServer(NotebookPolicy(hold)) as server, refusing:
        words = " ".join(f"word{i}" for i in range(FAN_OUT_CHILDREN))
        model = f"--model openai/policy --api-base {server.url}"
        notebook = write_notebook(
            lab.root_dir / "in_use.ipynb",
            [
                f"doc = 'the quarterly report'\nwords = {words!r}",
                f"%%rlm --context doc --model openai/policy --api-base {refusing.url}\nHow did revenue go?",
                f"%%rlm --new --context doc {model}\nHow did $revenue | net_income go?",
                f"%%rlm --new --context words {model} --depth 2 --concurrency {CONCURRENCY}\n{FAN_OUT_Q}",
            ],
        )
        cells = open_notebook(page, lab, notebook.name)
        run_cell(cells, 0, "[1]:")

        # A failed run: its tree, then one line saying what failed and what to do; no traceback frames.
        failed = run_cell(cells, 1, "[2]:")
        error = failed.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
        expect(error).to_have_count(1)
        expect(error).to_contain_text("refused the credentials (HTTP 401)")
        line = error.inner_text().strip()
        assert re.fullmatch(r"UsageError: RLM run error: model call failed: \S+ refused the credentials[^\n]+", line), (
            line
        )
        outputs = failed.locator(".jp-OutputArea").inner_text()
        assert "Traceback" not in outputs and 'File "' not in outputs and "---------" not in outputs
        expect(failed.locator("summary").first).to_contain_text("error n0 · d0")

        # An answer with dollars, a line break and a pipe, as the model wrote it (no LaTeX, no table).
        answered = run_cell(cells, 2, "[3]:")
        answer = answered.locator('.jp-OutputArea-output[data-mime-type="text/plain"]').last
        expect(answer).to_have_text(WRITTEN)
        expect(
            answered.locator(".jp-OutputArea mjx-container, .jp-OutputArea .MathJax, .jp-OutputArea table")
        ).to_have_count(0)

        # 50 children, 4 at a time, the first 10 answering at once: one line of counts by status.
        fan_out = run_cell(cells, 3)
        root_details = _node(fan_out, 0).locator(".widget-html-content").first
        counts = f"↳ {FAN_OUT_CHILDREN} child RLMs: 36 queued · {CONCURRENCY} running · {ANSWER_AT_ONCE} done"
        expect(root_details).to_contain_text(counts)
        # Compact: the queued children are no more than that count (no line each); the started ones are one-line nodes.
        expect(root_details.locator("div", has_text="child RLM n")).to_have_count(0)
        headers = fan_out.locator(".jupyter-widget-Collapse-header")
        expect(headers).to_have_count(1 + ANSWER_AT_ONCE + CONCURRENCY)
        heights = [box["height"] for box in headers.evaluate_all("hs => hs.map(h => h.getBoundingClientRect())")]
        assert max(heights[1:]) <= heights[0] * 1.2, heights  # a child's title fits on one line, like the root's
        page.screenshot(path=SHOTS / "5-fan-out-running.png")
        # On a narrow page the header wraps; the buttons beside it keep their whole labels (they showed `expan…`).
        page.set_viewport_size({"width": 640, "height": 900})
        for label in ("expand all", "collapse all"):
            button = fan_out.get_by_role("button", name=label)
            expect(button).to_be_visible()
            fits = button.evaluate("b => [b.scrollWidth, b.clientWidth, b.innerText]")
            assert fits[0] <= fits[1] and fits[2] == label, fits
        hold.set()
        expect(fan_out.locator(".jp-InputArea-prompt")).to_have_text("[4]:")
        expect(fan_out.locator(".jp-OutputArea")).to_contain_text(
            f"↳ {FAN_OUT_CHILDREN} child RLMs: {FAN_OUT_CHILDREN} done"
        )
        expect(headers).to_have_count(0)  # the widgets gave way to the static tree
        # The root, its children, the fold of the children past the first 20, and the timeline's fold.
        expect(fan_out.locator("details")).to_have_count(3 + FAN_OUT_CHILDREN)
        expect(fan_out.locator("summary", has_text=re.compile(r"^show \d+ more$"))).to_have_count(1)
        page.screenshot(path=SHOTS / "6-fan-out-done.png")


# -- an export: what JupyterLab and its HTML show, and its replay in the lab ------------------------


def test_an_export_shows_no_encoded_data_in_the_lab_or_in_its_html(lab: JupyterLab, page: Page) -> None:
    context = ledger()
    model = register_policy(lambda messages: repl(f"print(len(context))\nFINAL({WRITTEN!r})"))
    result = RLM(model=model).completion(context, "How did revenue go?")
    path = result.to_notebook(lab.root_dir / "revenue report.ipynb", context).path
    exported = nbformat.read(path, as_version=4)
    (payload_id,) = exported.metadata.rlm_kernel.replay
    payload = exported.metadata.rlm_kernel.replay[payload_id].data
    assert len(payload) > 10_000  # a payload that would fill screens if it were shown

    cells = open_notebook(page, lab, path.name)
    setup = cells.nth(2)
    expect(setup.locator(".jp-InputPlaceholder")).to_be_visible()  # hidden, as exported
    setup.locator(".jp-InputPlaceholder").click()
    expect(setup.locator(".jp-InputArea-editor")).to_have_text(f"%rlm_replay {payload_id}")
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").click()
    page.keyboard.press("Control+Shift+c")  # the command palette: Run All Cells
    page.keyboard.type("Run All Cells")
    page.keyboard.press("Enter")
    check = cells.last
    expect(check.locator(".jp-OutputArea-output").first).to_contain_text("with the same answer")
    expect(check.locator('.jp-OutputArea-output[data-mime-type="text/plain"]').last).to_have_text(WRITTEN)
    final = page.locator(".jp-MarkdownCell", has_text="Final answer").locator("pre")
    expect(final).to_have_text(WRITTEN)
    page.screenshot(path=SHOTS / "7-export-replayed.png", full_page=True)
    shown = page.locator("body").inner_text()
    assert not ENCODED.search(shown) and payload[:40] not in shown

    # nbconvert's HTML of the export, as a reader opens it.
    html_path = SHOTS / "export.html"
    html_path.write_text(HTMLExporter().from_notebook_node(exported)[0], encoding="utf-8")
    page.goto(html_path.as_uri())
    shown = page.locator("body").inner_text()
    assert not ENCODED.search(shown) and payload[:40] not in shown
    assert f"%rlm_replay {payload_id}" in shown
    expect(page.locator("pre", has_text="Revenue grew from").last).to_have_text(WRITTEN)
    page.screenshot(path=SHOTS / "8-export-html.png", full_page=True)


# -- both JupyterLab themes: every piece of text readable, live and static ------------------------------

# The WCAG contrast ratio of each visible piece of text with what is behind it (colours with alpha blended).
_LOW_CONTRAST_JS = """
([minimum, codeMinimum]) => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) throw new Error("unreadable colour " + c);
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, bottom) => [0, 1, 2].map((i) => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
  const behind = (el) => {
    const layers = [];
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c[3] > 0) layers.push(c);
      if (c[3] >= 1) break;
    }
    return layers.reverse().reduce((bg, layer) => over(layer, bg), [255, 255, 255, 1]);
  };
  const lum = (c) => c.slice(0, 3).map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  }).reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const low = [];
  let checked = 0;
  for (const area of document.querySelectorAll(".rlm-contrast-check")) {
    const walker = document.createTreeWalker(area, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      const text = walker.currentNode.textContent.trim();
      const el = walker.currentNode.parentElement;
      if (!text || !el.getClientRects().length || getComputedStyle(el).visibility === "hidden") continue;
      if (el.closest(".jupyter-widget-Collapse-header")) continue;  // ipywidgets' own titles, in its own colours
      const bg = behind(el);
      const fg = over(parse(getComputedStyle(el).color), bg);
      const [a, b] = [lum(fg), lum(bg)];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      const code = el.tagName === "SPAN" && el.parentElement && el.parentElement.tagName === "PRE";
      checked += 1;
      if (ratio < (code ? codeMinimum : minimum)) low.push([text.slice(0, 40), ratio.toFixed(2), getComputedStyle(el).color]);
    }
  }
  return {checked, low};
}
"""
# Body text at WCAG AA; highlighted code at 3, the contrast JupyterLab's own editor colours give in its dark theme.
TEXT_CONTRAST, CODE_CONTRAST = 4.5, 3.0
THEME_Q = "How are the parts?"


class ThemePolicy:
    """Prose, code, output, an error, an llm_query and a child RLM: every kind of text the tree shows.

    The child's model call waits for `hold`, so the live tree can be looked at while the run is under way.
    """

    def __init__(self, hold: threading.Event) -> None:
        self.hold = hold

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        if len(messages) == 1:  # llm_query
            return "hi"
        question = question_of(messages)
        if question == THEME_Q:
            code = [
                "# read first\nsaid = llm_query('say hi')\nprint(said, 1 / 0)",
                "part = rlm_query(context, 'the part')",
                "FINAL(f'{part} / {said}')",
            ]
            return repl(code[len(messages) // 2 - 1], prose="Asking a sub-model, then a child.")
        self.hold.wait(90)  # the child: opened by the test; the timeout only stops a failed test from hanging
        return repl("FINAL(context.upper())", prose="Upper case.")


def _readable(page: Page, where: str) -> None:
    """Every visible piece of text in the marked outputs has enough contrast with its background."""
    found = page.evaluate(_LOW_CONTRAST_JS, [TEXT_CONTRAST, CODE_CONTRAST])
    assert found["checked"] > 20, (where, found)
    assert found["low"] == [], (where, found["low"])


def _mark_outputs(cell: Locator) -> None:
    cell.locator(".jp-OutputArea").evaluate(
        "area => { area.classList.add('rlm-contrast-check');"
        " area.querySelectorAll('details').forEach(d => d.open = true); }"
    )


def _use_theme(page: Page, name: str) -> None:
    page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").click()
    page.keyboard.press("Control+Shift+c")
    page.keyboard.type(f"Use Theme: {name}")
    page.keyboard.press("Enter")
    expect(page.locator("body")).to_have_attribute("data-jp-theme-name", name)


def _whole_cell_screenshot(page: Page, cell: Locator, path: Path) -> None:
    """The cell whole: the notebook scrolls inside the page, so the window is made tall enough for it first."""
    viewport = page.viewport_size
    box = cell.bounding_box()
    if viewport is None or box is None:
        return
    page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], int(box["height"]) + 400)})
    try:
        cell.scroll_into_view_if_needed()
        cell.screenshot(path=path)
    finally:
        page.set_viewport_size(viewport)


@pytest.mark.parametrize("theme_name", ["JupyterLab Light", "JupyterLab Dark"])
def test_the_tree_reads_in_both_jupyterlab_themes(lab: JupyterLab, page: Page, theme_name: str) -> None:
    hold = threading.Event()
    slug = theme_name.split()[-1].lower()
    with ModelServer(ThemePolicy(hold)) as server:
        notebook = write_notebook(
            lab.root_dir / f"theme_{slug}.ipynb",
            [
                "doc = 'alpha'",
                f"%%rlm --context doc --model openai/policy --api-base {server.url} --depth 2\n{THEME_Q}",
            ],
        )
        cells = open_notebook(page, lab, notebook.name)
        _use_theme(page, theme_name)
        run_cell(cells, 0, "[1]:")
        cell = run_cell(cells, 1)
        try:
            # Live: the root open with its code, output, error and sub-calls; the child waits for its model.
            expect(cell.locator(".jupyter-widget-Accordion")).to_have_count(2)
            root = _node(cell, 0).locator(".widget-html-content").first
            expect(root).to_contain_text("ZeroDivisionError")
            _mark_outputs(cell)
            _readable(page, f"live, {theme_name}")
            page.screenshot(path=SHOTS / f"theme-{slug}-live.png")
        finally:
            hold.set()
        expect(cell.locator(".jp-InputArea-prompt")).to_have_text("[2]:")
        # Static: the widgets gave way to the <details> tree (every node opened here to check all of it).
        expect(cell.locator(".jupyter-widget-Accordion")).to_have_count(0)
        expect(cell.locator("details")).not_to_have_count(0)
        _mark_outputs(cell)
        _readable(page, f"static, {theme_name}")
        page.screenshot(path=SHOTS / f"theme-{slug}-static.png")
        _whole_cell_screenshot(page, cell, SHOTS / f"theme-{slug}-tree.png")  # the README's (make screenshot)
    static = cell.locator(".jp-OutputArea-output[data-mime-type='text/html']").first.inner_html()

    # nbconvert's HTML of the same tree, in its light and dark themes, and on a page that defines no theme.
    for name, page_html in (
        ("nbconvert", _nbconvert_page(static, "light" if slug == "light" else "dark")),
        (
            "plain",
            f'<body style="background:#0d1117;color:#e6edf3"><div class="rlm-contrast-check">{static}</div></body>',
        ),
    ):
        path = SHOTS / f"theme-{slug}-{name}.html"
        path.write_text(page_html, encoding="utf-8")
        page.goto(path.as_uri())
        page.evaluate(
            "document.querySelectorAll('.jp-OutputArea-output').forEach(o => o.classList.add('rlm-contrast-check'));"
            "document.querySelectorAll('details').forEach(d => d.open = true)"
        )
        _readable(page, f"{name} html, {theme_name}")


def _nbconvert_page(tree_html: str, nbconvert_theme: str) -> str:
    """A notebook holding the tree as an output, converted by nbconvert in its `nbconvert_theme`."""
    cell = nbformat.v4.new_code_cell(
        "%rlm show", outputs=[nbformat.v4.new_output("display_data", {"text/html": tree_html})]
    )
    return HTMLExporter(theme=nbconvert_theme).from_notebook_node(nbformat.v4.new_notebook(cells=[cell]))[0]


# -- a big fan-out at a glance --------------------------------------------------------------------------


def test_a_200_child_run_is_short_with_the_root_open(browser: Browser, tmp_path: Path) -> None:
    """The static tree of 200 children: a counts line, 20 one-line sub-calls, the rest folded under "show N more"."""
    from tests.test_view import _fanout, _synthetic_events

    trace = Trace.from_events(_synthetic_events(_fanout(201, fanout=200)))
    path = tmp_path / "fan_out.html"
    path.write_text(f"<!doctype html><html><body>{render_html(trace)}</body></html>", encoding="utf-8")
    with new_page(browser, {"width": 1200, "height": 800}) as page:
        page.goto(path.as_uri())
        expect(page.locator("body")).to_contain_text("↳ 200 child RLMs: 200 done")
        height = page.evaluate("document.body.scrollHeight")
        page.screenshot(path=SHOTS / "fan-out-200-static.png", full_page=True)
        print(f"200-child static tree, root open: {height} px")  # pytest -s shows the figure
        assert height < 1500, height
        page.get_by_text("show 181 more").click()  # 200 children and the block's llm_query, 20 listed
        expect(page.locator("details > summary", has_text=re.compile(r" · d1 · "))).to_have_count(200)
