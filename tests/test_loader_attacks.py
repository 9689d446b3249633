"""Attacks on the file loaders: a folder (from a tarball, a git checkout, a shared drive) whose files are links out
of it, devices, FIFOs, or parser bombs. Each must end in one ContextError line naming the file, fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlm_kernel.core.errors import ContextError
from rlm_kernel.loaders import LoadLimits, load_context, load_files
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block

RUN = [sys.executable, "-m", "rlm_kernel.cli", "run", "--context"]
KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"
SECRET = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{KEY_BODY}\n"


def _folder_with_links_out(tmp_path: Path) -> Path:
    home = tmp_path / "home" / ".ssh"
    home.mkdir(parents=True)
    (home / "id_ed25519").write_text(SECRET)
    folder = tmp_path / "checkout"
    folder.mkdir()
    (folder / "readme.md").write_text("the project\n")
    (folder / "appendix.md").symlink_to(home / "id_ed25519")
    (folder / "users.txt").symlink_to("/etc/passwd")
    (folder / "inside.md").symlink_to(folder / "readme.md")  # a link that stays inside is read
    return folder


def _one_line(error: pytest.ExceptionInfo[ContextError]) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_links_out_of_a_folder_are_refused_and_never_reach_the_model_server(tmp_path):
    folder = _folder_with_links_out(tmp_path)
    for source in (str(folder), str(folder / "*.md")):
        with pytest.raises(ContextError) as error:
            load_context(source)
        assert "appendix.md" in _one_line(error) and "outside" in str(error.value)
        loaded = load_files(source, skip_unreadable=True)
        assert KEY_BODY not in json.dumps(loaded.context) and "root:" not in json.dumps(loaded.context)
        assert sorted(Path(d["path"]).name for d in loaded.context) == ["inside.md", "readme.md"]
    followed = load_context(str(folder), follow_symlinks=True)  # the explicit option still reads them
    assert KEY_BODY in json.dumps(followed)

    policy = Recorder(lambda messages: block("print(context)\nFINAL('done')"))
    with ModelServer(policy) as server:
        command = [*RUN, str(folder), "--query", "q", "--model", "openai/policy", "--api-base", server.url]
        done = subprocess.run(
            [*command, "--skip-unreadable"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    sent = json.dumps(policy.requests)
    assert "the project" in sent and KEY_BODY not in sent and "root:x" not in sent
    assert "appendix.md" in done.stderr and "outside" in done.stderr


def test_a_fifo_in_a_folder_is_skipped_and_never_hangs_rlm_run(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("notes\n")
    os.mkfifo(folder / "pipe.txt")
    policy = Recorder(lambda messages: block("FINAL(len(context))"))
    with ModelServer(policy) as server:
        command = [*RUN, str(folder), "--query", "q", "--model", "openai/policy", "--api-base", server.url]
        skipped = subprocess.run([*command, "--skip-unreadable"], capture_output=True, text=True, timeout=60)
        refused = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert skipped.returncode == 0, skipped.stderr
    assert "pipe.txt" in skipped.stderr and "not a regular file (a FIFO)" in skipped.stderr
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "pipe.txt" in refused.stderr


def test_devices_are_not_read_alone_or_through_a_link(tmp_path):
    with pytest.raises(ContextError, match=r"not a regular file \(a character device\): /dev/zero"):
        load_context("/dev/zero")
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "page.html").symlink_to("/dev/zero")
    with pytest.raises(ContextError) as error:
        load_context(str(folder))
    assert "page.html" in _one_line(error)


def test_bytes_and_rows_per_file_are_bounded(tmp_path):
    (tmp_path / "big.txt").write_text("x" * 5000)
    with pytest.raises(ContextError, match=r"big\.txt is larger than max_file_bytes=4,096"):
        load_context(str(tmp_path / "big.txt"), limits=LoadLimits(max_file_bytes=4096))
    (tmp_path / "rows.csv").write_text("a\n" + "1\n" * 11)
    with pytest.raises(ContextError, match=r"rows\.csv has more than max_rows=10 rows"):
        load_context(str(tmp_path / "rows.csv"), limits=LoadLimits(max_rows=10))
    (tmp_path / "rows.jsonl").write_text("1\n" * 11)
    with pytest.raises(ContextError, match=r"rows\.jsonl has more than max_rows=10 rows"):
        load_context(str(tmp_path / "rows.jsonl"), limits=LoadLimits(max_rows=10))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000),
        ("deep.jsonl", '{"a": 1}\n' + "[" * 100_000 + "]" * 100_000 + "\n"),
        ("nested.json", '{"a": ' * 500 + "1" + "}" * 500),  # parses, but deepcopy of the context breaks later
        ("broken.html", "<p>intro</p><!["),
    ],
)
def test_parser_failures_are_one_line_naming_the_file(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    try:
        loaded = load_context(str(tmp_path / name))
    except ContextError as error:
        assert name in str(error) and "\n" not in str(error)
    else:
        assert name == "broken.html" and loaded == "intro"


def test_an_html_bomb_is_read_in_linear_time(tmp_path):
    (tmp_path / "bomb.html").write_text("<a " * 20_000)
    (tmp_path / "big.html").write_text("<p>a <b>b</b> &amp; c</p>\n" * 40_000)
    started = time.monotonic()
    with pytest.raises(ContextError, match=r"bomb\.html: the context is empty"):  # one tag, no text
        load_context(str(tmp_path / "bomb.html"))
    assert load_context(str(tmp_path / "big.html")).startswith("a b & c\na b & c")
    assert time.monotonic() - started < 10  # html.parser took 41 s for the bomb alone


def test_parse_time_per_file_is_bounded(tmp_path, monkeypatch):
    import rlm_kernel.loaders.documents as documents

    def slow(markup: str) -> str:
        while True:
            pass

    monkeypatch.setattr(documents, "html_text", slow)
    (tmp_path / "page.html").write_text("<p>x</p>")
    started = time.monotonic()
    with pytest.raises(ContextError, match=r"page\.html took longer than parse_seconds=0\.5 s to parse"):
        load_context(str(tmp_path / "page.html"), limits=LoadLimits(parse_seconds=0.5))
    assert time.monotonic() - started < 5


def test_a_parquet_bomb_is_refused_before_it_is_decompressed(tmp_path):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as parquet

    table = pyarrow.table({"x": pyarrow.array([0] * 5_000_000, type=pyarrow.int8())})
    parquet.write_table(table, tmp_path / "bomb.parquet", compression="zstd")
    assert (tmp_path / "bomb.parquet").stat().st_size < 100_000
    with pytest.raises(ContextError, match=r"bomb\.parquet has more than max_rows=1,000,000 rows"):
        load_context(str(tmp_path / "bomb.parquet"))
