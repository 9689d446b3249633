"""The notebook side of sessions, tools, typed answers, instructions, the cache and documents, over HTTP."""

from __future__ import annotations

import dataclasses

import pytest
from IPython.core.error import UsageError

from rlm_kernel.models.server import ModelServer
from tests.conftest import run
from tests.support_features import Recorder, block, question, turn

CELL = "%%rlm --context doc --model openai/policy --api-base {url} {options}\n{question}"


def _ask(ip, url, text, options=""):
    return run(ip, CELL.format(url=url, options=options, question=text))


def test_a_later_cell_continues_the_session_and_new_starts_another(ip, capsys):
    def root(messages):
        if question(messages) == "how many?":
            return block("found = 41\nFINAL(found)")
        return block("FINAL(found + 1)")

    policy = Recorder(root)
    ip.user_ns["doc"] = "a document"
    with ModelServer(policy) as server:
        assert _ask(ip, server.url, "how many?") == 41
        assert _ask(ip, server.url, "one more?") == 42
        assert _ask(ip, server.url, "one more?", "--new") == 42  # the namespace is the notebook's either way
    firsts = [str(m[1]["content"]) for m in policy.roots()]
    assert "Earlier in this session" not in firsts[0]
    assert "Question 1: how many?" in firsts[1] and "Your answer (done): 41" in firsts[1]
    assert "Earlier in this session" not in firsts[2]
    capsys.readouterr()
    run(ip, "%rlm history")
    table = capsys.readouterr().out
    # the table's plain text: aligned columns, run then session.turn
    first, second, third = [row.split()[1] for row in table.splitlines() if row[:1].isdigit()]
    assert first.endswith(".1") and second == first[:-1] + "2" and third.endswith(".1") and third != first


def test_rerunning_an_unchanged_cell_with_cache_makes_no_request(ip, tmp_path):
    policy = Recorder(lambda messages: block("x = llm_query('hi')") if turn(messages) == 0 else block("FINAL(x)"))
    ip.user_ns["doc"] = "a document"
    with ModelServer(policy) as server:
        options = f"--cache-in {tmp_path}"
        assert _ask(ip, server.url, "what?", options) == "sub:hi"
        served = server.stats()["requests"]
        assert _ask(ip, server.url, "what?", options) == "sub:hi"
        assert server.stats()["requests"] == served == 3
    last = ip.user_ns["rlm_last"]
    assert (last.usage.llm_calls, last.usage.cached_calls) == (0, 3)


def test_tools_answer_type_and_instructions_name_notebook_objects(ip):
    @dataclasses.dataclass
    class Finding:
        item: str
        count: int

    def search(term: str) -> int:
        """How often `term` occurs in the archive."""
        return {"pump": 3}.get(term, 0)

    def root(messages):
        if turn(messages) == 0:
            return block("FINAL({'item': 'pump', 'count': 'many'})")
        return block("FINAL({'item': 'pump', 'count': search('pump')})")

    policy = Recorder(root)
    ip.user_ns.update(doc="a document", search=search, Finding=Finding, guide="Count pumps only.")
    with ModelServer(policy) as server:
        answer = _ask(ip, server.url, "count?", "--tools search --answer-type Finding --instructions guide")
    assert answer == Finding("pump", 3)
    system = policy.roots()[0][0]["content"]
    assert "`search(term: str) -> int`: How often `term` occurs" in system
    assert "Instructions from the user:\nCount pumps only." in system
    assert "count: int" in system
    assert "count: expected int, got str 'many'" in policy.roots()[1][-1]["content"]


@pytest.mark.parametrize(
    "options, message",
    [
        ("--tools nowhere", "--tools nowhere: there is no notebook variable called nowhere"),
        ("--tools doc", "--tools doc: expected a function, but doc is a str"),
        ("--answer-type doc", "--answer-type doc: expected a type, but doc is a str"),
        ("--instructions n", "--instructions n: expected a string, but n is a int"),
    ],
)
def test_options_naming_the_wrong_object_are_one_line_errors(ip, options, message):
    ip.user_ns.update(doc="a document", n=3)
    with pytest.raises(UsageError, match=message):
        _ask(ip, "http://127.0.0.1:9/v1", "q", options)


def test_load_skips_unreadable_files_when_asked_and_lists_them(ip, tmp_path, capsys):
    (tmp_path / "a.txt").write_text("text")
    (tmp_path / "b.bin").write_bytes(b"\x00\x01")
    with pytest.raises(UsageError, match="binary file: .*b.bin; skip_unreadable=True"):
        run(ip, f"%rlm load {tmp_path}")
    run(ip, f"%rlm load {tmp_path} --skip-unreadable --as docs")
    assert [d["content"] for d in ip.user_ns["docs"]] == ["text"]
    assert "skipped 1 unreadable file: binary file:" in capsys.readouterr().out
