"""Attacks on an exported notebook: the replay data in its metadata is not trusted. A changed reply must not run
code that no cell shows, a whole replay shows what it runs, a zlib bomb is refused, and the folder scan reads only
regular files and skips decoys."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import zlib
from pathlib import Path
from typing import Any

import nbformat
import pytest
from IPython.core.error import UsageError

from rlm_kernel.core.errors import ExportError
from rlm_kernel.formats import notebook as export
from rlm_kernel.jupyter.replay import find_export_payload
from tests.conftest import run
from tests.test_export import CONTEXT, generated, record_depth_two_run

FIRST_LINE = "print(len(context), 'chars')"


@pytest.fixture(scope="module")
def recorded():
    return record_depth_two_run()


def _payload_lines(nb: Any) -> tuple[str, list[dict[str, Any]]]:
    ((payload_id, entry),) = nb.metadata.rlm_kernel.replay.items()
    data = zlib.decompress(base64.b64decode(entry["data"]))
    return payload_id, [json.loads(line) for line in data.decode("utf-8").split("\n")]


def _with_payload(nb: Any, old_id: str, lines: list[dict[str, Any]]) -> Any:
    """The notebook with its payload replaced, under the new payload's own id, as an attacker would write it."""
    data = zlib.compress("\n".join(json.dumps(line) for line in lines).encode("utf-8"))
    new_id = hashlib.sha256(data).hexdigest()[: export.PAYLOAD_ID_CHARS]
    changed = nbformat.reads(nbformat.writes(nb).replace(old_id, new_id), as_version=4)
    changed.metadata.rlm_kernel.replay[new_id]["data"] = base64.b64encode(data).decode("ascii")
    return changed


def _change_reply(lines: list[dict[str, Any]], node: str, iteration: int, old: str, new: str) -> None:
    for line in lines:
        if line.get("kind") == "iteration" and line["node_id"] == node and line["data"]["index"] == iteration:
            assert old in line["data"]["reply"]
            line["data"]["reply"] = line["data"]["reply"].replace(old, new)


def _writes(marker: Path) -> str:
    """The attacker's line: it leaves a file behind (and closes it: an open file left to the collector is a warning)."""
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')"


def _tampered(recorded, tmp_path: Path, node: str, iteration: int, old: str, marker: Path) -> Any:
    nb = nbformat.read(recorded.to_notebook(tmp_path / "source.ipynb", CONTEXT).path, as_version=4)
    (tmp_path / "source.ipynb").unlink()
    payload_id, lines = _payload_lines(nb)
    _change_reply(lines, node, iteration, old, f"{_writes(marker)}; {old}")
    changed = _with_payload(nb, payload_id, lines)
    nbformat.write(changed, tmp_path / "run.ipynb")
    return changed


def test_a_changed_root_reply_runs_nothing_the_cell_does_not_show(recorded, ip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "marker"
    nb = _tampered(recorded, tmp_path, recorded.trace.root_id, 0, FIRST_LINE, marker)
    code = [c for c in nb.cells if c.cell_type == "code"]
    run(ip, code[0].source)
    run(ip, code[1].source)  # the setup cell
    with pytest.raises(UsageError, match="no recorded block shows"):
        run(ip, generated(nb)[0].source)  # the cell is byte-identical to the honest export's
    assert not marker.exists()


def test_a_changed_child_reply_runs_nothing_either(recorded, ip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "marker"
    child = recorded.trace.root.children[0]
    nb = _tampered(recorded, tmp_path, child, 0, "print(part)", marker)
    code = [c for c in nb.cells if c.cell_type == "code"]
    run(ip, code[0].source)
    run(ip, code[1].source)
    for cell in generated(nb):
        try:
            run(ip, cell.source)
        except Exception:  # the replay fails once the child's block is refused
            break
    assert not marker.exists()


def test_a_whole_replay_shows_the_code_it_runs(recorded, ip, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "marker"
    nb = _tampered(recorded, tmp_path, recorded.trace.root_id, 0, FIRST_LINE, marker)
    (payload_id,) = nb.metadata.rlm_kernel.replay
    run(ip, "%load_ext rlm_kernel")
    try:
        run(ip, f"%rlm_replay {payload_id} --whole")
    except Exception:
        pass  # the tampered run differs from its record: what matters is what was shown
    shown = capsys.readouterr().out
    assert _writes(marker) in shown and FIRST_LINE in shown


def test_a_zlib_bomb_payload_is_refused_before_it_is_decompressed_whole():
    bomb = zlib.compress(b"\n" * 100_000_000, 9)
    payload_id = hashlib.sha256(bomb).hexdigest()[: export.PAYLOAD_ID_CHARS]
    with pytest.raises(ExportError, match="decompresses to more than 67,108,864 bytes"):
        export.decode_payload(base64.b64encode(bomb).decode("ascii"), payload_id)


def _scan(payload_id: str) -> list[Any]:
    found: list[Any] = []

    def scan() -> None:
        try:
            found.append(find_export_payload(payload_id, {}))
        except Exception as error:
            found.append(error)

    thread = threading.Thread(target=scan, daemon=True)
    thread.start()
    thread.join(timeout=20)
    return found


def test_the_folder_scan_skips_a_fifo_and_a_decoy_with_the_same_id(recorded, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    nb = nbformat.read(recorded.to_notebook(tmp_path / "report.ipynb", CONTEXT).path, as_version=4)
    (payload_id,) = nb.metadata.rlm_kernel.replay
    decoy = nbformat.reads(nbformat.writes(nb), as_version=4)
    decoy.metadata.rlm_kernel.replay[payload_id]["encoding"] = "rot13"
    nbformat.write(decoy, tmp_path / "a decoy.ipynb")  # sorted before report.ipynb
    os.mkfifo(tmp_path / "a pipe.ipynb")
    found = _scan(payload_id)
    assert found, "the folder scan hung on a FIFO"
    assert not isinstance(found[0], Exception), found[0]
    assert found[0].root.query == recorded.trace.root.query
