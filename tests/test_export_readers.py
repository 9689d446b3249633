"""What readers of an export meet: no encoded replay data anywhere they look, the answer as written, old exports.

JupyterLab, nbconvert's HTML and GitHub show cell sources and outputs and never the notebook's metadata,
where the replay data lives; the setup cell finds the file that holds it when it runs.
"""

from __future__ import annotations

import html
import json
import random
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbconvert import HTMLExporter

from rlm_kernel import RLM
from rlm_kernel.cli import main
from rlm_kernel.core.errors import ExportError, ReplayError
from rlm_kernel.formats.notebook import read_export
from rlm_kernel.jupyter.replay import find_export_payload
from rlm_kernel.models.policies import register_policy
from tests.conftest import repl, run

# Encoded data as a reader would meet it: 200 base64 characters in a row, or wrapped in lines (older exports
# wrapped theirs at 120 characters, which a 200-character run alone would miss).
ENCODED = re.compile(r"[A-Za-z0-9+/=]{200,}|(?:[A-Za-z0-9+/=]{60,}\s+){3,}")
ANSWER = "Revenue grew from $5M in 2023\nto $7M in 2024 | net_income up"
QUESTION = "How did revenue go?"
FIXTURES = Path(__file__).parent / "fixtures"


def ledger(chars: int = 200_000) -> str:
    """A context of about `chars` characters that compresses as real logs do, not to nothing."""
    rng = random.Random(7)
    lines, size = [], 0
    while size < chars:
        line = f"{rng.randrange(10**6):06d} account-{rng.randrange(5000)} {rng.choice(['debit', 'credit'])} {rng.random():.6f}"
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines)


def policy(messages: list[dict[str, Any]]) -> str:
    if messages[0]["role"] != "system":
        return "sub saw " + messages[-1]["content"][:30]
    if len(messages) == 2:
        return repl("print(len(context), 'chars')\nnote = llm_query(context[:500])\nprint(note)")
    return repl(f"FINAL({ANSWER!r})", prose="Submitting.")


def html_text(page: str) -> str:
    """The text of an nbconvert page, without its stylesheets (whose icons are base64 data URIs) and scripts."""
    page = re.sub(r"<(style|script)\b.*?</\1>", "", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def github_text(notebook: dict[str, Any]) -> str:
    """What GitHub's renderer shows of a notebook: its cells' sources and outputs (never the metadata)."""
    shown = []
    for cell in notebook["cells"]:
        shown.append("".join(cell["source"]))
        for output in cell.get("outputs", []):
            shown += ["".join(output.get("text", "")), *map(str, output.get("data", {}).values())]
            shown += output.get("traceback", [])
    return "\n".join(shown)


def payload_of(notebook: dict[str, Any]) -> str:
    (entry,) = notebook["metadata"]["rlm_kernel"]["replay"].values()
    return str(entry["data"])


def test_no_reader_sees_the_replay_data_of_rlm_export_or_the_magic(ip, tmp_path, capsys):
    context = ledger()
    (tmp_path / "ledger.txt").write_text(context, encoding="utf-8")
    trace = tmp_path / "trace.jsonl"
    model = register_policy(policy)
    ip.user_ns["books"] = context
    assert run(ip, f"%%rlm --context books --model {model} --trace {trace}\n{QUESTION}") == ANSWER
    run(ip, f"%rlm export {tmp_path / 'magic.ipynb'}")
    assert main(["export", str(trace), str(tmp_path / "cli.ipynb"), "--context", str(tmp_path / "ledger.txt")]) == 0
    assert capsys.readouterr().out.count("context: embedded") == 2
    for name in ("magic.ipynb", "cli.ipynb"):
        path = tmp_path / name
        text = path.read_text(encoding="utf-8")
        notebook = json.loads(text)
        nbformat.validate(nbformat.reads(text, as_version=4))
        payload = payload_of(notebook)
        pieces = [payload[i : i + 40] for i in range(0, len(payload) - 40, 40)]
        assert len(pieces) > 100  # a payload of some size, so that its absence below says something
        # GitHub renders the cells' sources and outputs, and ignores the metadata.
        shown = github_text(notebook)
        assert not ENCODED.search(shown) and not any(piece in shown for piece in pieces)
        setup = next(c for c in notebook["cells"] if "rlm-replay" in c["metadata"].get("tags", []))
        assert re.fullmatch(r"%rlm_replay [0-9a-f]{16}", setup["source"])
        page, _ = HTMLExporter().from_notebook_node(nbformat.reads(text, as_version=4))
        (tmp_path / f"{path.stem}.html").write_text(page, encoding="utf-8")
        assert not ENCODED.search(html_text(page)) and not any(piece in page for piece in pieces), name
        final = page[page.index("Final answer") :]
        assert ANSWER in html.unescape(final[final.index("<pre") : final.index("</pre>")])  # as written
        # The payload is stored once: the file is the payload plus the readable notebook, little more.
        assert (
            text.count(payload) == 1 and len(text) < len(payload) + len(json.dumps(notebook["cells"], indent=1)) + 4096
        )
        assert run(ip, f"%rlm replay {path}") == ANSWER


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, str]:
    """A small export in its own folder, and its payload id."""
    result = RLM(model=register_policy(policy)).completion("a short ledger", QUESTION)
    folder = tmp_path / "reports"
    folder.mkdir()
    path = result.to_notebook(folder / "run.ipynb", "a short ledger").path
    (payload_id,) = json.loads(path.read_text(encoding="utf-8"))["metadata"]["rlm_kernel"]["replay"]
    return path, payload_id


def test_the_setup_cell_finds_its_notebook_where_the_frontend_says_then_in_the_working_directory(
    export, tmp_path, monkeypatch
):
    path, payload_id = export
    monkeypatch.chdir(tmp_path)  # not the export's folder
    for name in ("__session__", "__vsc_ipynb_file__"):  # JupyterLab and Notebook 7; VS Code
        assert find_export_payload(payload_id, {name: str(path)}).root.answer == ANSWER
    with pytest.raises(ReplayError, match=f"found no notebook holding it in its folder {tmp_path}"):
        find_export_payload(payload_id, {})
    # Renamed after the kernel started: the frontend's path is stale, the working directory has it under a new name.
    monkeypatch.chdir(path.parent)
    path.rename(path.parent / "renamed.ipynb")
    assert find_export_payload(payload_id, {"__session__": str(path)}).root.answer == ANSWER
    # Another export (another id) at the path the frontend names is not taken for this one.
    other = RLM(model=register_policy(policy)).completion("another ledger", QUESTION)
    other.to_notebook(path, "another ledger")
    found = find_export_payload(payload_id, {"__session__": str(path)})
    assert found.contexts[found.root_id]["value"] == "a short ledger"
    (path.parent / "renamed.ipynb").unlink()
    with pytest.raises(ReplayError, match=f"The replay data {payload_id} is kept in this notebook's file"):
        find_export_payload(payload_id, {"__session__": str(path)})
    with pytest.raises(ReplayError, match=f"{path} holds no replay data {payload_id}: name the exported notebook"):
        find_export_payload(payload_id, {}, from_path=str(path))  # a file, but another export


def test_damaged_or_lost_replay_data_is_one_clear_error(export, tmp_path):
    path, payload_id = export
    notebook = json.loads(path.read_text(encoding="utf-8"))
    entry = notebook["metadata"]["rlm_kernel"]["replay"][payload_id]
    entry["data"] = entry["data"][:-8] + "AAAAAAA="
    (tmp_path / "damaged.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
    with pytest.raises(ExportError, match="replay data .*is damaged"):
        read_export(tmp_path / "damaged.ipynb")
    del notebook["metadata"]["rlm_kernel"]
    (tmp_path / "lost.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
    with pytest.raises(ExportError, match=f"has lost its replay data: its metadata holds no id {payload_id}"):
        read_export(tmp_path / "lost.ipynb")


@pytest.mark.parametrize("fixture", ["export_schema1.ipynb", "export_schema2.ipynb"])
def test_older_exports_with_the_data_in_their_setup_cell_still_step_through(ip, fixture):
    """Exports written before the data moved to the metadata: schema 1 (commit 4842cdc), schema 2 (3fb736e)."""
    nb = nbformat.read(FIXTURES / fixture, as_version=4)
    assert nb.cells[2].source.startswith("%%rlm_replay\n")
    # The checks above can fail: on an older export they find the data every reader saw.
    page, _ = HTMLExporter().from_notebook_node(nb)
    assert ENCODED.search(html_text(page)) and ENCODED.search(github_text(nb))
    recorded = read_export(FIXTURES / fixture)
    for cell in [c for c in nb.cells if c.cell_type == "code"][:-1]:
        ip.run_cell(cell.source, store_history=False)  # a recorded error is raised again, as recorded
    assert run(ip, "%rlm_replay_check") == recorded.root.answer
