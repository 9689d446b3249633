"""The reply parser and text-answer extraction: examples, and a property test that nothing crashes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlm_kernel.core.parsing import find_text_final, parse_reply


def test_runs_repl_python_and_bare_fences_in_order_and_skips_other_languages():
    reply = 'a\n```repl\none\n```\nb\n```python\ntwo\n```\n```json\n{"x": 1}\n```\n```\nthree\n```\n'
    assert parse_reply(reply).blocks == ["one\n", "two\n", "three\n"]


def test_prose_excludes_code_and_unclosed_fence_runs_to_the_end():
    parsed = parse_reply("plan\n```repl\nx = 1\n")
    assert parsed.blocks == ["x = 1\n"] and parsed.prose == "plan\n"


def test_empty_blocks_are_dropped():
    assert parse_reply("```repl\n\n```\n```\n   \n```").blocks == []


def test_fake_output_after_code_cuts_the_reply():
    parsed = parse_reply("```repl\nprint(1)\n```\n```output\n1\n```\n```repl\nprint(2)\n```")
    assert parsed.blocks == ["print(1)\n"] and parsed.fabricated_output
    assert "print(2)" not in parsed.kept


def test_output_words_before_any_code_are_just_prose():
    parsed = parse_reply("Output: I will look first.\n```repl\nprint(1)\n```")
    assert parsed.blocks == ["print(1)\n"] and not parsed.fabricated_output


def test_text_final_forms():
    assert find_text_final("FINAL(a (b) c)").argument == "a (b) c"
    assert find_text_final("x\n  FINAL_VAR('result')").argument == "result"
    assert find_text_final("say FINAL(x) mid-line") is None
    multi = find_text_final("FINAL(line one\nline two)")
    assert multi.argument == "line one\nline two"


text = st.text(alphabet=st.characters(codec="utf-8"), max_size=400)
pieces = st.lists(
    st.one_of(
        text,
        st.sampled_from(
            [
                "```",
                "```repl\n",
                "```python\n",
                "\n```\n",
                "FINAL(",
                "FINAL_VAR(",
                ")",
                "(",
                "REPL output:",
                "```output\n",
                "\x00",
                "\ufffd",
            ]
        ),
    ),
    max_size=30,
)


@pytest.mark.slow  # 400 generated replies: about 10 s on its own
@settings(max_examples=400, deadline=None)
@given(pieces)
def test_parser_never_crashes_and_blocks_come_from_the_reply(parts):
    reply = "".join(parts)
    parsed = parse_reply(reply)
    for block in parsed.blocks:
        assert block.strip() and block in reply
    assert len(parsed.kept) <= len(reply)
    final = find_text_final(parsed.prose)
    assert final is None or final.kind in ("FINAL", "FINAL_VAR")


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=2000))
def test_binary_garbage_is_handled(data):
    parse_reply(data.decode("latin-1"))
    find_text_final(data.decode("latin-1"))


def test_huge_reply_is_parsed_quickly():
    reply = "```repl\n" + "x = 1\n" * 200_000 + "```\nFINAL(" + "(" * 10_000
    parsed = parse_reply(reply)
    assert len(parsed.blocks) == 1
    assert find_text_final(parsed.prose) is not None
