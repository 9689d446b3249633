"""Sessions over HTTP: the namespace and the conversation carry across questions; the memory stays bounded."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.session import Turn, render_history
from rlm_kernel.models.server import ModelServer
from tests.support_features import Recorder, block, question

# Every feature works the same on both transports (the server sees the same requests).
pytestmark = pytest.mark.usefixtures("each_transport")


def _first_user(messages) -> str:
    return str(messages[1]["content"])


def test_a_follow_up_sees_the_earlier_question_its_answer_and_its_variables():
    def root(messages):
        if question(messages) == "how many?":
            return block("found = 41\nFINAL(found)")
        return block("FINAL(found + 1)")  # only works if the namespace carried over

    policy = Recorder(root)
    with ModelServer(policy) as server:
        rlm = RLM(model="openai/policy", api_base=server.url)
        with rlm.session() as session:
            first = session.completion("ctx", "how many?")
            second = session.completion("ctx", "and one more?")
        alone = rlm.completion("ctx", "how many?")
    assert (first.answer, second.answer, alone.answer) == (41, 42, 41)
    assert len(second.trace.nodes) == 1 and second.trace.root.query == "and one more?"  # results stay separate
    told = _first_user(policy.roots()[1])
    assert "Question 1: how many?" in told and "Your answer (done): 41" in told and "Variables it made: found" in told
    assert told.index("Question 1: how many?") < told.index("Question: and one more?")
    assert "Earlier in this session" not in _first_user(policy.roots()[2])  # a plain completion has no memory
    assert [second.extra["session"], second.extra["session_turn"]] == [first.extra["session"], 2]


def _root_input_tokens(session_tokens: int, questions: int = 10) -> list[int]:
    policy = Recorder(lambda messages: block("FINAL('finding ' * 250)"))
    with ModelServer(policy) as server:
        rlm = RLM(model="openai/policy", api_base=server.url, session_tokens=session_tokens)
        with rlm.session() as session:
            results = [session.completion("ctx", f"question {i}") for i in range(1, questions + 1)]
    last = _first_user(policy.roots()[-1])
    if session_tokens < 1000:
        assert "left out" in last and "Compacted:" in last and "Question 9:" in last
    return [r.trace.root.iterations[0].usage.input_tokens for r in results]


def test_compaction_keeps_the_root_prompt_bounded_at_question_10():
    bounded = _root_input_tokens(session_tokens=300)
    unbounded = _root_input_tokens(session_tokens=10**9)
    # The server counts 4 characters a token, the session's budget 3: 300 budget tokens are about 225 here.
    assert bounded[-1] - bounded[0] <= 300, bounded
    assert unbounded[-1] - unbounded[0] > 2000, unbounded
    assert bounded[-1] - bounded[0] >= 100  # the memory is used, not dropped


def test_render_history_is_within_budget_and_keeps_the_newest_turn():
    turns = [Turn(f"q{i}", "done", "a" * 3000, ["v"]) for i in range(30)]
    for budget in (50, 400, 4000):
        text = render_history(turns, budget)
        assert text is not None and "Question 30: q29" in text
        assert len(text) / 3 <= max(budget, 1500 / 3 + 60)
    assert render_history(turns, 0) is None and render_history([], 100) is None


def test_rlm_run_asks_follow_ups_in_one_session_with_tools_and_a_typed_answer(tmp_path):
    (tmp_path / "notes.txt").write_text("notes")
    (tmp_path / "mytools.py").write_text('def double(n: int) -> int:\n    """Twice n."""\n    return 2 * n\n')

    def root(messages):
        if question(messages) == "first?":
            return block("kept = double(20)\nFINAL(str(kept))")
        return block("FINAL(kept + 1)")

    policy = Recorder(root)
    with ModelServer(policy) as server:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "rlm_kernel.cli", "run", "--context", str(tmp_path / "notes.txt")),
                *("--query", "first?", "--query", "then?", "--tools", "mytools:double", "--answer-type", "int"),
                *("--model", "openai/policy", "--api-base", server.url),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"},
        )
    assert done.returncode == 0, done.stderr
    assert "Answer 1:\n40\n" in done.stdout and "Answer 2:\n41\n" in done.stdout
    assert "`double(n: int) -> int`: Twice n." in policy.roots()[0][0]["content"]
    assert "Question 1: first?" in _first_user(policy.roots()[1])


def test_a_follow_up_replays_offline_with_what_it_was_told_of_the_session():
    from rlm_kernel.core.repl import NamespaceREPL
    from rlm_kernel.formats.replay import replay_run

    def root(messages):
        if question(messages) == "how many?":
            return block("found = 41\nFINAL(found)")
        return block("FINAL(found + 1)")

    with ModelServer(Recorder(root)) as server:
        with RLM(model="openai/policy", api_base=server.url).session() as session:
            session.completion("ctx", "how many?")
            second = session.completion("ctx", "and one more?")
    start = second.trace.events[0]
    assert start.kind == "call_start" and "Question 1: how many?" in start.data["history"]
    repl = NamespaceREPL()
    repl.set("found", 41)  # what the first question left in the session's namespace
    replayed = replay_run(second.trace, "ctx", repl=repl)
    assert replayed.matches and replayed.result.answer == 42


def test_a_follow_up_carries_the_questions_before_it_and_a_rewound_one_is_gone():
    with ModelServer(Recorder(lambda messages: block("FINAL(1)"))) as server:
        with RLM(model="openai/policy", api_base=server.url).session() as session:
            first = session.completion("first ctx", "one")
            session.rewind()  # the same cell run again: its first run is forgotten
            again = session.completion("first ctx", "one")
            second = session.completion("second ctx", "two")
    assert first.earlier == again.earlier == ()
    assert [(t.trace.root.query, t.context) for t in second.earlier] == [("one", "first ctx")]
    assert session.results == [again, second]
