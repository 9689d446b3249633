"""Documents: PDF pages, HTML text, Parquet records, and folders with files no loader can read."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from rlm_kernel.core.errors import ContextError
from rlm_kernel.loaders import load_context, load_files
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block

HTML = """<html><head><title>t</title><style>p {color: red}</style></head><body>
<h1>Report</h1><p>The pump &amp; valve were <b>replaced</b>.</p><script>var secret = 1;</script>
<ul><li>one</li><li>two</li></ul></body></html>"""


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("plain notes\n")
    (folder / "page.html").write_text(HTML)
    (folder / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    return folder


def test_html_is_read_as_its_visible_text(tmp_path):
    (tmp_path / "page.html").write_text(HTML)
    assert load_context(str(tmp_path / "page.html")) == "Report\nThe pump & valve were replaced.\none\ntwo"


def test_an_unreadable_file_fails_a_folder_with_a_hint_and_skip_unreadable_lists_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pypdf", None)  # as where the optional extra is not installed
    folder = _folder(tmp_path)
    with pytest.raises(ContextError, match=r"binary file: .*image\.png; skip_unreadable=True \(--skip-unreadable\)"):
        load_context(str(folder))
    loaded = load_files(str(folder), skip_unreadable=True)
    assert [Path(d["path"]).name for d in loaded.context] == ["notes.txt", "page.html"]
    reasons = dict((Path(p).name, why) for p, why in loaded.skipped)
    assert reasons["image.png"].startswith("binary file:")
    assert "needs pypdf, which is not installed: pip install 'rlm_kernel[pdf]'" in reasons["scan.pdf"]


def test_pdf_pages_keep_their_numbers(tmp_path, monkeypatch):
    class Page:
        def __init__(self, text):
            self._text = text

        def extract_text(self):
            return self._text

    class PdfReader:  # pypdf's interface, as far as the loader uses it
        def __init__(self, path):
            self.is_encrypted = False
            self.pages = [Page("Intro"), Page(""), Page("The answer is on page three.")]

    monkeypatch.setitem(sys.modules, "pypdf", types.SimpleNamespace(PdfReader=PdfReader))
    (tmp_path / "a.pdf").write_bytes(b"%PDF-1.4")
    assert load_context(str(tmp_path / "a.pdf")) == [
        {"page": 1, "text": "Intro"},
        {"page": 2, "text": ""},
        {"page": 3, "text": "The answer is on page three."},
    ]


# pypdf comes with the test dependencies (requirements.lock), so this runs everywhere the suite does.
def test_a_real_pdf_through_pypdf(tmp_path):
    import pypdf

    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=72, height=72)
    with open(tmp_path / "blank.pdf", "wb") as file:
        writer.write(file)
    assert load_context(str(tmp_path / "blank.pdf")) == [{"page": 1, "text": ""}]


def test_parquet_without_pandas_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    with pytest.raises(ContextError, match="needs pandas, which is not installed: pip install pandas pyarrow"):
        load_context(str(tmp_path / "t.parquet"))


def test_parquet_records_through_pandas(tmp_path, monkeypatch):
    class Frame:
        def to_dict(self, orient):
            assert orient == "records"
            return [{"id": 1, "name": "a"}]

    monkeypatch.setitem(sys.modules, "pandas", types.SimpleNamespace(read_parquet=lambda path: Frame()))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # its footer check needs a real file
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    assert load_context(str(tmp_path / "t.parquet")) == [{"id": 1, "name": "a"}]


def test_rlm_run_skips_unreadable_files_lists_them_and_the_model_sees_each_path(tmp_path):
    folder = _folder(tmp_path)
    (folder / "scan.pdf").unlink()
    policy = Recorder(lambda messages: block("FINAL(sorted(d['path'].rsplit('/', 1)[1] for d in context))"))
    with ModelServer(policy) as server:
        command = [sys.executable, "-m", "rlm_kernel.cli", "run", "--context", str(folder), "--query", "which files?"]
        done = subprocess.run(
            [*command, "--skip-unreadable", "--model", "openai/policy", "--api-base", server.url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        refused = subprocess.run(
            [*command, "--model", "openai/policy", "--api-base", server.url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert "['notes.txt', 'page.html']" in done.stdout
    assert done.stderr.startswith("skipped 1 unreadable file: binary file: ") and "image.png" in done.stderr
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "binary file" in refused.stderr and "--skip-unreadable" in refused.stderr


def test_the_loaders_old_import_path_still_loads(tmp_path):
    from rlm_kernel.core import loaders as old_path

    (tmp_path / "a.txt").write_text("text\n")
    assert old_path.load_context(str(tmp_path / "a.txt")) == "text\n"
    assert old_path.load_files(str(tmp_path), skip_unreadable=True).context == [
        {"path": str(tmp_path / "a.txt"), "content": "text\n"}
    ]
