"""Answer-protocol and observation edge cases, many of them inputs from the reference implementation's own tests."""

from __future__ import annotations

import copy
import re

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.context import context_metadata
from rlm_kernel.core.helpers import make_helpers
from rlm_kernel.core.readonly import READ_ONLY_MESSAGE
from tests.conftest import repl


def seen_observations(calls):
    """The user messages a scripted root model received after its first."""
    return [m["content"] for messages in calls for m in messages[2:] if m["role"] == "user"]


def recording(replies):
    calls = []
    queue = list(replies)

    def policy(messages):
        calls.append(messages)
        return queue.pop(0) if messages[0]["role"] == "system" else "sub-reply"

    return policy, calls


def test_an_assignment_to_answer_stays_for_a_prose_final_var(scripted):
    model = scripted([repl("answer = [1, 2, 3]", prose="Computing.") + "\nFINAL_VAR(answer)"])
    result = RLM(model=model).completion("ctx", "q")
    assert (result.status, result.answer) == ("done", [1, 2, 3])


def test_a_rebound_answer_dict_submits_its_own_content(scripted):
    model = scripted(
        [
            repl('answer = {"content": "intermediate", "ready": False}'),
            repl('answer["ready"] = True'),
        ]
    )
    result = RLM(model=model).completion("ctx", "q")
    assert (result.status, result.answer) == ("done", "intermediate")


def test_a_prose_final_of_a_literal_keeps_its_value(scripted):
    for reply, expected in (("FINAL(42)", 42), ("FINAL([1, 'a'])", [1, "a"]), ("FINAL(plain words)", "plain words")):
        result = RLM(model=scripted([f"Done.\n{reply}"])).completion("ctx", "q")
        assert result.answer == expected


@pytest.mark.parametrize(
    "code, limit, true_length",
    [
        ("print('x' * 30_000)", 100, 30_000),
        ("print('x' * 30_000)", 320, 30_000),
        ("print('a' * 60_000)\n'b' * 60_000", 10_000, 120_002),  # stdout, then a trailing value
    ],
)
def test_the_truncation_note_states_the_true_length(scripted, code, limit, true_length):
    policy, calls = recording([repl(code), repl("FINAL(1)")])
    RLM(model=scripted(policy), max_output_chars=limit).completion("ctx", "q")
    notes = re.findall(r"\[\.\.\. ([\d,]+) of ([\d,]+) chars omitted", seen_observations(calls)[0])
    omitted, total = (int(n.replace(",", "")) for n in notes[-1])
    assert abs(total - true_length) <= 2  # the newline print adds and the one the observation strips
    shown = sum(len(run) for run in re.findall(r"x{5,}|a{5,}|b{5,}", seen_observations(calls)[0]))
    assert abs(total - omitted - shown) <= 4  # what was shown plus what was omitted is the whole


def test_a_prose_result_line_does_not_drop_the_later_blocks(scripted):
    reply = "```repl\nx = 1\n```\nResult: x is set; next I double it.\n```repl\ny = x * 2\nFINAL(y)\n```\n"
    result = RLM(model=scripted([reply])).completion("ctx", "q")
    assert (result.status, result.answer) == ("done", 2)


def test_a_fabricated_output_is_cut_and_the_model_is_told(scripted):
    reply = "```repl\nx = 1\nprint(x)\n```\nREPL output:\n1\n```repl\nFINAL(x)\n```\n"
    policy, calls = recording([reply, repl("FINAL('after')")])
    result = RLM(model=scripted(policy)).completion("ctx", "q")
    assert result.answer == "after"
    observation = seen_observations(calls)[0]
    assert "text posing as its output" in observation and "1 code block(s) after it" in observation


def test_context_metadata_counts_lines_as_the_text_has_them():
    assert context_metadata("one\ntwo\n").lines == 2
    assert context_metadata("one\ntwo").lines == 2
    assert context_metadata("one\n\n").lines == 2


def test_grep_says_flags_are_re_flags():
    grep = make_helpers("Some Text\nmore text")["grep"]
    with pytest.raises(TypeError, match="flags are re flags such as re.I"):
        grep("text", flags="i")
    assert grep("text", flags=re.I) == ["L1: Some Text", "L2: more text"]


@pytest.mark.parametrize(
    "context",
    [["c", "b", "a"], [{"k": [1]}, {"k": [2]}], {"a": [1], "b": {"c": 2}}],
    ids=["list[str]", "list[dict]", "dict"],
)
def test_model_code_never_changes_the_callers_context(scripted, context):
    before = copy.deepcopy(context)
    attempts = ["context.reverse()", "context.append('injected')", "context[0] = 'x'"]
    if isinstance(context, dict):
        attempts = ["context['a'].append(99)", "context['new'] = 1", "context['b']['c'] = 3", "context.pop('a')"]
    elif isinstance(context[0], dict):
        attempts += ["peek(0, 1)[0]['k'].append(99)", "context[0]['k'] = 1", "[r['k'].clear() for r in context]"]
    code = "refused = []\n" + "".join(
        f"try:\n    {attempt}\nexcept TypeError as e:\n    refused.append(str(e))\n" for attempt in attempts
    )
    result = RLM(model=scripted([repl(code + "FINAL(refused)")])).completion(context, "q")
    assert context == before
    assert result.answer == [READ_ONLY_MESSAGE] * len(attempts)


def test_a_str_context_is_shared_not_copied(scripted):
    text = "x" * 1_000_000
    model = scripted([repl("FINAL(id(context))")])
    assert RLM(model=model).completion(text, "q").answer == id(text)


def test_an_oversize_sub_call_is_not_sent_and_its_slot_says_to_split(scripted):
    sent = []

    def policy(messages):
        if messages[0]["role"] == "system":
            return repl("r = llm_query_batched(['x' * 3_000_000, 'short'])\nFINAL(r)")
        sent.append(len(messages[0]["content"]))
        return "ok"

    model = scripted(policy)
    result = RLM(model=model, sub_window=100_000).completion("ctx", "q")
    oversize, short = result.answer
    assert sent == [5] and short == "ok"
    assert oversize.startswith("Error: prompt not sent: its 3,000,000 characters") and "partition" in oversize
    assert "at most about 299,976 characters" in result.trace.events[0].data["system_prompt"]


def test_litellms_window_guards_a_known_sub_model_and_is_stated():
    rlm = RLM(model="openai/gpt-4o-mini")
    window = rlm.sub_input_window("openai/gpt-4o-mini")
    assert window is not None and window >= 100_000
