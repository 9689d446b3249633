"""Tests of rlm_kernel.core.context: checking, metadata, the model's helpers and the loader."""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import operator
import re
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlm_kernel.core import context as context_module
from rlm_kernel.core.context import (
    SUPPORTED,
    ContextError,
    ContextMetadata,
    check_context,
    context_metadata,
    is_recorded_context,
)
from rlm_kernel.core.helpers import make_helpers
from rlm_kernel.loaders import load_context

# ---------------------------------------------------------------------------
# check_context


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (None, "None"),
        ("", "the context is empty"),
        ([], "the context is empty"),
        ({}, "the context is empty"),
        (b"abc", "binary context: decode it to str first"),
        (bytearray(b"abc"), "binary context"),
        (memoryview(b"abc"), "binary context"),
        ("text\x00more", "NUL characters (first at offset 4)"),
        (["ok", "bad\x00"], "item 1 of the context contains NUL"),
        (["a", "b", 3], "mixes item types (item 0 is str, item 2 is int)"),
        ([{"a": 1}, "b"], "mixes item types (item 0 is dict, item 1 is str)"),
        ([1, 2], "unsupported context type list[int]"),
        ({"a", "b"}, "unsupported context type set"),
        (7, "unsupported context type int"),
        (("a", "b"), "unsupported context type tuple"),
    ],
)
def test_check_context_rejects(context: object, expected: str) -> None:
    with pytest.raises(ContextError) as info:
        check_context(context)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_unsupported_types_name_what_is_supported() -> None:
    class DataFrame:  # the right name in the wrong module is not a pandas frame
        pass

    for context in (DataFrame(), 7, [1]):
        with pytest.raises(ContextError, match=re.escape(SUPPORTED)):
            check_context(context)


def test_context_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        check_context(None)


@pytest.mark.parametrize("context", ["x", ["a", ""], [{"a": 1}, {}], {"k": None}, {1: "one"}])
def test_check_context_accepts(context: object) -> None:
    check_context(context)


# ---------------------------------------------------------------------------
# metadata


def test_str_metadata() -> None:
    text = "first line\nsecond line\n" + "x" * 1000
    meta = context_metadata(text, preview_chars=15)
    assert meta.type == "str"
    assert meta.length == len(text)
    assert meta.items is None
    assert meta.lines == 3
    assert meta.preview == "first line\nseco"
    assert "1,023 chars in 3 lines" in meta.summary
    assert meta.sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_str_hash_is_the_utf8_hash_across_slice_boundaries() -> None:
    text = ("é😀 Grüße\n" * 300_000)[:2_500_001]  # longer than one 1 MiB hashing slice, non-ASCII throughout
    assert context_metadata(text).sha256 == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_list_str_metadata() -> None:
    items = ["short", "two\nlines", "y" * 900, "mid" * 10]
    meta = context_metadata(items)
    assert (meta.type, meta.items, meta.lines) == ("list[str]", 4, None)
    assert meta.length == 5 + 9 + 900 + 30
    assert meta.summary == "4 items; item length min 5 / median 9 / max 900 chars"
    lines = meta.preview.split("\n")
    assert lines[0] == "[0] short"
    assert lines[1] == "[1] two\\nlines"  # one line per item
    assert lines[2].startswith("[2] yyy") and lines[2].endswith("…") and len(lines[2]) == 4 + 160
    assert lines[3] == "[3] " + "mid" * 10


def test_list_preview_says_how_many_items_it_left_out() -> None:
    meta = context_metadata([f"item number {i}" for i in range(10_000)], preview_chars=200)
    assert len(meta.preview) <= 200
    shown = [line for line in meta.preview.split("\n") if line.startswith("[")]
    assert meta.preview.endswith(f"… {10_000 - len(shown):,} more items")


def test_list_dict_metadata() -> None:
    records = [{"id": 1, "text": "hello"}, {"id": 22, "text": "bye", "tag": "x"}, {"id": 3, "text": "z" * 50}]
    meta = context_metadata(records)
    assert (meta.type, meta.items) == ("list[dict]", 3)
    assert meta.length == (1 + 5) + (2 + 3 + 1) + (1 + 50)
    assert "3 records; keys: id, text, tag (in 1)" in meta.summary
    assert "record length min 6 / median 6 / max 51 chars" in meta.summary
    assert meta.preview.split("\n")[0] == "[0] {'id': 1, 'text': 'hello'}"


def test_dict_metadata() -> None:
    mapping = {"alpha": "a" * 100, "beta": [1, 2, 3], 7: None}
    meta = context_metadata(mapping)
    assert (meta.type, meta.items, meta.lines) == ("dict", 3, None)
    assert meta.length == (5 + 100) + (4 + len("[1, 2, 3]")) + (1 + 4)  # keys count too
    assert "3 keys; value types: str (1), list (1), NoneType (1)" in meta.summary
    lines = meta.preview.split("\n")
    assert lines[0].startswith("'alpha': 'aaa")
    assert lines[1:] == ["'beta': [1, 2, 3]", "7: None"]


@pytest.mark.parametrize("context", ["z" * 5000, ["z" * 5000] * 3, [{"k": "z" * 5000}] * 3, {"k": "z" * 5000, "l": 1}])
@pytest.mark.parametrize("preview_chars", [0, 10, 100])
def test_preview_respects_preview_chars(context: object, preview_chars: int) -> None:
    preview = context_metadata(context, preview_chars=preview_chars).preview
    assert len(preview) <= preview_chars
    assert bool(preview) == (preview_chars > 0)


def test_describe_shows_the_numbers_and_a_fenced_preview() -> None:
    text = "# Title\n" + "body text\n" * 2000
    description = context_metadata(text).describe()
    assert "type: str" in description
    assert f"length: {len(text):,} characters" in description
    assert "lines: 2,001" in description  # the final newline ends line 2,001 and starts none
    assert "```\n# Title\nbody text\n" in description
    items = context_metadata({f"k{i}": i for i in range(1500)}).describe()
    assert "type: dict" in items and "keys: 1,500" in items


def test_describe_fence_outlasts_backticks_in_the_preview() -> None:
    description = context_metadata("before\n```python\nx = 1\n```\nafter").describe()
    assert "\n````\nbefore\n```python" in description
    assert description.endswith("\n````")


def test_describe_does_not_grow_with_the_context() -> None:
    unit = "The quick brown fox jumps over the lazy dog.\n"
    small = (unit * 300)[:10_000]
    large = (unit * 300_000)[:10_000_000]
    small_len, large_len = len(context_metadata(small).describe()), len(context_metadata(large).describe())
    assert abs(small_len - large_len) <= 0.05 * small_len


def test_metadata_is_fast_on_10m_chars() -> None:
    text = ("some line of text\n" * 600_000)[:10_000_000]
    started = time.perf_counter()
    context_metadata(text)
    assert time.perf_counter() - started < 1.0  # about 0.02 s here; a per-line Python loop takes seconds


def test_metadata_does_not_copy_a_large_string() -> None:
    text = "abcdefghi\n" * 5_000_000  # 50 MB
    tracemalloc.start()
    try:
        context_metadata(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_hash_equality_and_inequality() -> None:
    def digest(context: object) -> str:
        return context_metadata(context).sha256

    assert digest("abc\ndef") == digest("abc" + "\ndef")
    assert digest("abc\ndef") != digest("abc\ndeg")
    assert digest(["ab", "c"]) == digest(["ab", "c"])
    assert digest(["ab", "c"]) != digest(["a", "bc"])  # item boundaries count
    assert digest(["abc"]) != digest("abc")  # so does the type
    assert digest([{"a": 1, "b": 2}]) == digest([{"b": 2, "a": 1}])  # key order inside a record does not
    assert digest([{"a": 1}]) != digest([{"a": 2}])
    assert digest({"a": [1, 2]}) == digest({"a": [1, 2]})
    assert digest({"a": [1, 2]}) != digest({"a": [2, 1]})
    assert digest({1: "x", "1": "y"}) != digest({"1": "x", 1: "y"})  # mixed key types still hash
    assert digest("a\ud800") != digest("a\ud801")  # lone surrogates (from e.g. surrogateescape) still hash


def _many_records(count: int) -> list[dict[str, object]]:
    return [{"id": i, "text": "x" * (i % 100), **({"tag": "t"} if i % 4 == 0 else {})} for i in range(count)]


def test_metadata_of_a_million_records_reads_a_bounded_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    read = {"json": 0, "record": 0}

    def counted(name: str, function: object) -> object:
        def call(*args: object, **kwargs: object) -> object:
            read[name] += 1
            return function(*args, **kwargs)  # type: ignore[operator]

        return call

    monkeypatch.setattr(context_module, "_json", counted("json", context_module._json))
    monkeypatch.setattr(context_module, "_record_chars", counted("record", context_module._record_chars))
    records = _many_records(1_000_000)
    meta = context_metadata(records)
    assert read["json"] <= 1000 and read["record"] <= 1000  # the hash and the lengths: a sample, not every record
    true_length = sum(len(str(value)) for record in records for value in record.values())
    assert abs(meta.length - true_length) / true_length < 0.02
    assert meta.items == 1_000_000
    tagged = re.search(r"keys: id, text, tag \(in ~(\d+),000\)", meta.summary)
    assert tagged and 200 <= int(tagged[1]) <= 300  # a quarter of the records, estimated
    assert meta.summary.endswith("length and key counts estimated from 1,000 sampled records")


def test_a_large_contexts_hash_is_a_fingerprint_of_its_length_and_a_sample() -> None:
    def digest(context: object) -> str:
        return context_metadata(context).sha256

    records = _many_records(5000)
    assert digest(records) == digest(_many_records(5000))
    assert digest(records) != digest(records[:-1])  # the length counts
    assert digest(records) != digest(records[::-1])  # so does the order
    changed = _many_records(5000)
    changed[context_module._sampled(5000)[7]]["text"] = "edited"
    assert digest(records) != digest(changed)
    texts = [str(i) for i in range(5000)]
    longer = [*texts[:-1], texts[-1] + "!"]  # the last item is not sampled, but a list of str's total length is hashed
    assert digest(texts) != digest(longer)
    mapping = {f"k{i}": i for i in range(5000)}
    assert digest(mapping) != digest({**mapping, f"k{context_module._sampled(5000)[3]}": -1})


def test_a_trace_recorded_with_the_whole_item_hash_still_takes_its_context() -> None:
    records = _many_records(3000)
    whole = hashlib.sha256(b"list[dict]\n")  # how traces recorded a list before it was sampled
    for record in records:
        whole.update(json.dumps(record, sort_keys=True).encode() + b"\n")
    assert context_metadata(records).sha256 != whole.hexdigest()
    assert is_recorded_context(records, whole.hexdigest())
    assert is_recorded_context(records, context_metadata(records).sha256)
    assert not is_recorded_context(records[1:], whole.hexdigest())
    assert not is_recorded_context(records, context_metadata(records[1:]).sha256)


def test_a_large_list_of_str_keeps_its_exact_length() -> None:
    items = [f"item {i}" for i in range(250_000)]
    meta = context_metadata(items)
    assert meta.length == sum(map(len, items))
    assert meta.summary.endswith("; item lengths from 1,000 sampled items")


def test_to_dict_round_trips() -> None:
    meta = context_metadata(["a", "b"])
    assert ContextMetadata(**meta.to_dict()) == meta
    assert json.loads(json.dumps(meta.to_dict()))["items"] == 2


def test_context_metadata_checks_first() -> None:
    with pytest.raises(ContextError, match="binary context"):
        context_metadata(b"abc")


# ---------------------------------------------------------------------------
# helpers: peek

TEXT = "alpha one\nbeta two\ngamma three alpha\ndelta\nalpha alpha"


def test_make_helpers_gives_documented_functions() -> None:
    helpers = make_helpers(TEXT, default_chunk_chars=1234)
    assert sorted(helpers) == ["grep", "partition", "peek"]
    for name, helper in helpers.items():
        assert helper.__name__ == name
        assert helper.__doc__ and "$" not in helper.__doc__
        assert "self" not in inspect.signature(helper).parameters
    assert "size=1,234" in helpers["partition"].__doc__
    assert "entries" in make_helpers({"a": 1})["peek"].__doc__


def test_make_helpers_checks_the_context() -> None:
    with pytest.raises(ContextError):
        make_helpers([1, "a"])


def test_peek_str() -> None:
    peek = make_helpers(TEXT)["peek"]
    assert peek() == TEXT
    assert peek(6, 3) == "one"
    assert peek(-5) == "alpha"
    assert peek(-5, 2) == "al"
    assert peek(-1000, 5) == "alpha"
    with pytest.raises(ValueError):
        peek(0, -1)


def test_peek_list_and_dict() -> None:
    items = [f"i{k}" for k in range(10)]
    peek = make_helpers(items)["peek"]
    assert peek(2, 3) == ["i2", "i3", "i4"]
    assert peek(-2) == ["i8", "i9"]
    mapping = {f"k{k}": k for k in range(10)}
    peek = make_helpers(mapping)["peek"]
    assert peek(3, 2) == {"k3": 3, "k4": 4}
    assert peek(-1) == {"k9": 9}


# ---------------------------------------------------------------------------
# helpers: grep on text


def test_grep_lines_reports_each_line_once_with_its_number() -> None:
    grep = make_helpers(TEXT)["grep"]
    assert grep("alpha") == ["L1: alpha one", "L3: gamma three alpha", "L5: alpha alpha"]
    assert grep("^(beta|delta)") == ["L2: beta two", "L4: delta"]  # ^ matches at every line start
    assert grep("ALPHA") == []
    assert grep("ALPHA", flags=re.I)[0] == "L1: alpha one"
    assert grep("two$") == ["L2: beta two"]


def test_grep_match_starting_at_a_newline_reports_the_line_it_ends() -> None:
    assert make_helpers("ab\ncd\n")["grep"](r"\n") == ["L1: ab", "L2: cd"]


def test_grep_cuts_long_lines_around_the_match() -> None:
    text = "short\n" + "x" * 5000 + "NEEDLE" + "y" * 5000
    [hit] = make_helpers(text)["grep"]("NEEDLE")
    assert hit.startswith("L2: …x") and hit.endswith("y…")
    assert "NEEDLE" in hit and len(hit) < 520


def test_grep_window_reports_every_match_with_offsets() -> None:
    grep = make_helpers(TEXT)["grep"]
    hits = grep("alpha", window=3)
    assert hits[0] == "@0: alpha on…"
    assert hits[1] == f"@{TEXT.index('alpha', 1)}: …ee alpha\nde…"
    assert hits[-1] == f"@{len(TEXT) - 5}: …ha alpha"
    assert len(hits) == 4  # the two on line 5 are separate matches


def test_grep_max_matches_appends_a_notice_only_when_more_exist() -> None:
    grep = make_helpers(TEXT)["grep"]
    assert grep("alpha", max_matches=2) == [
        "L1: alpha one",
        "L3: gamma three alpha",
        "… more matches not shown (max_matches=2)",
    ]
    assert grep("alpha", max_matches=3) == grep("alpha")
    assert grep("alpha", window=1, max_matches=1)[-1] == "… more matches not shown (max_matches=1)"


def test_grep_rejects_bad_arguments() -> None:
    grep = make_helpers(TEXT)["grep"]
    with pytest.raises(ValueError, match=r"invalid regex '\(unclosed'"):
        grep("(unclosed")
    with pytest.raises(ValueError):
        grep("a", window=-1)
    with pytest.raises(ValueError):
        grep("a", max_matches=0)


def test_grep_line_numbers_on_a_large_text() -> None:
    text = "".join(f"row {i}\n" for i in range(200_000))
    assert make_helpers(text)["grep"](r"^row 199999$") == ["L200000: row 199999"]


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="ab\n", min_size=1, max_size=200), needle=st.sampled_from(["a", "ab", "ba", "bb"]))
def test_grep_lines_match_a_naive_line_scan(text: str, needle: str) -> None:
    expected = [f"L{no}: {line}" for no, line in enumerate(text.split("\n"), 1) if needle in line]
    assert make_helpers(text)["grep"](re.escape(needle)) == expected


# ---------------------------------------------------------------------------
# helpers: grep on items


def test_grep_list_str() -> None:
    grep = make_helpers(["nothing here", "a needle here", "needle needle"])["grep"]
    assert grep("needle") == ["[1] a needle here", "[2] needle needle"]  # one entry per item
    assert grep("needle", window=2) == ["[1] @2: a needle h…", "[2] @0: needle n…", "[2] @7: …e needle"]
    assert grep("needle", max_matches=1) == ["[1] a needle here", "… more matches not shown (max_matches=1)"]


def test_grep_item_text_is_cut_around_a_late_match() -> None:
    [hit] = make_helpers(["q" * 1000 + "needle" + "r" * 1000])["grep"]("needle")
    assert hit.startswith("[0] …q") and hit.endswith("r…") and "needle" in hit
    assert len(hit) <= 4 + 302


def test_grep_list_dict_searches_json() -> None:
    grep = make_helpers([{"id": 1, "text": "café"}, {"id": 2, "text": "tea"}])["grep"]
    assert grep('"id": 2') == ['[1] {"id": 2, "text": "tea"}']
    assert grep("café") == ['[0] {"id": 1, "text": "café"}']  # not escaped to \\u00e9


def test_grep_dict_searches_key_and_value() -> None:
    grep = make_helpers({"title": "Report", "tags": ["x", "report"], 3: "three"})["grep"]
    assert grep("(?i)report") == ["[0] title: Report", '[1] tags: ["x", "report"]']
    assert grep("^3: ") == ["[2] 3: three"]
    assert grep("^title") == ["[0] title: Report"]


def test_grep_on_items_rejects_an_invalid_regex() -> None:
    with pytest.raises(ValueError, match="invalid regex"):
        make_helpers(["a"])["grep"]("[")


# ---------------------------------------------------------------------------
# helpers: partition on text


def test_partition_n_moves_cuts_to_the_next_nearby_newline() -> None:
    text = "a" * 52 + "\n" + "b" * 46 + "\n"  # 100 chars; the ideal cut at 50 has a newline 3 chars later
    assert make_helpers(text)["partition"](n=2) == ["a" * 52 + "\n", "b" * 46 + "\n"]
    far = "a" * 80 + "\n" + "b" * 19  # the newline is 30 chars past the ideal cut: too far to move to
    assert make_helpers(far)["partition"](n=2) == [far[:50], far[50:]]


def test_partition_size_prefers_newlines_in_the_last_tenth() -> None:
    text = ("x" * 95 + "\n") * 3
    chunks = make_helpers(text)["partition"](size=100)
    assert chunks == ["x" * 95 + "\n"] * 3
    no_newline = "y" * 250
    assert make_helpers(no_newline)["partition"](size=100) == ["y" * 100, "y" * 100, "y" * 50]


def test_partition_by_keeps_the_separator_at_the_start() -> None:
    markdown = "intro\n# One\ntext 1\n# Two\ntext 2\n"
    assert make_helpers(markdown)["partition"](by=r"^# ") == ["intro\n", "# One\ntext 1\n", "# Two\ntext 2\n"]
    assert make_helpers("# A\nx\n# B\n")["partition"](by=r"^# ") == ["# A\nx\n", "# B\n"]  # no empty first chunk
    assert make_helpers("no headers")["partition"](by=r"^# ") == ["no headers"]


def test_partition_default_is_default_chunk_chars() -> None:
    chunks = make_helpers("z" * 25, default_chunk_chars=10)["partition"]()
    assert chunks == ["z" * 10, "z" * 10, "z" * 5]


def test_partition_n_larger_than_the_text() -> None:
    assert make_helpers("abc")["partition"](n=10) == ["a", "b", "c"]


def test_partition_rejects_bad_arguments() -> None:
    partition = make_helpers(TEXT)["partition"]
    with pytest.raises(ValueError, match="only one of"):
        partition(n=2, size=3)
    with pytest.raises(ValueError, match="only one of"):
        partition(size=2, by="x")
    with pytest.raises(ValueError):
        partition(n=0)
    with pytest.raises(ValueError):
        partition(size=0)
    with pytest.raises(ValueError, match="invalid regex"):
        partition(by="(")


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="abc\n", min_size=1, max_size=400), n=st.integers(1, 30))
def test_partition_n_property(text: str, n: int) -> None:
    chunks = make_helpers(text)["partition"](n=n)
    assert "".join(chunks) == text
    assert len(chunks) == min(n, len(text))
    assert all(chunks)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="abc\n", min_size=1, max_size=400), size=st.integers(1, 60))
def test_partition_size_property(text: str, size: int) -> None:
    chunks = make_helpers(text)["partition"](size=size)
    assert "".join(chunks) == text
    assert all(0 < len(chunk) <= size for chunk in chunks)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="ab#\n", min_size=1, max_size=300))
def test_partition_by_property(text: str) -> None:
    chunks = make_helpers(text)["partition"](by=r"^#")
    assert "".join(chunks) == text
    assert all(chunks)
    assert all(chunk.startswith("#") for chunk in chunks[1:])


# ---------------------------------------------------------------------------
# helpers: partition on items


def test_partition_list() -> None:
    items = [str(k) for k in range(10)]
    partition = make_helpers(items)["partition"]
    groups = partition(n=3)
    assert [len(group) for group in groups] == [4, 3, 3]
    assert functools.reduce(operator.iadd, groups, []) == items
    assert partition(size=4) == [items[:4], items[4:8], items[8:]]
    assert partition(n=50) == [[item] for item in items]
    with pytest.raises(ValueError, match="by= applies to text contexts"):
        partition(by="x")


def test_partition_list_default_groups_by_characters() -> None:
    items = ["a" * 40, "b" * 40, "c" * 40, "d" * 200, "e" * 10]
    groups = make_helpers(items, default_chunk_chars=100)["partition"]()
    assert groups == [items[:2], items[2:3], items[3:4], items[4:]]
    records = [{"t": "x" * 30}] * 7
    assert [len(g) for g in make_helpers(records, default_chunk_chars=100)["partition"]()] == [3, 3, 1]


def test_partition_dict() -> None:
    mapping = {f"k{k}": k for k in range(7)}
    partition = make_helpers(mapping)["partition"]
    groups = partition(n=2)
    assert groups == [{f"k{k}": k for k in range(4)}, {f"k{k}": k for k in range(4, 7)}]
    assert [list(group) for group in partition(size=3)] == [["k0", "k1", "k2"], ["k3", "k4", "k5"], ["k6"]]
    assert partition() == [mapping]
    with pytest.raises(ValueError, match="by= applies to text contexts"):
        partition(by="k")


# ---------------------------------------------------------------------------
# load_context


def test_load_text_files(tmp_path: Path) -> None:
    for name in ("notes.txt", "doc.md", "page.markdown", "guide.rst", "app.log", "data.weird"):
        (tmp_path / name).write_text(f"content of {name}\nline 2\n", encoding="utf-8")
        assert load_context(str(tmp_path / name)) == f"content of {name}\nline 2\n"
    (tmp_path / "crlf.txt").write_bytes("\ufeffé\r\nb\r\n".encode())
    assert load_context(str(tmp_path / "crlf.txt")) == "é\nb\n"  # BOM dropped, universal newlines


def test_load_rejects_non_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(ContextError, match=r"^not UTF-8 text: .*latin1\.txt"):
        load_context(str(path))


def test_load_json(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"x": [1, 2], "y": "z"}')
    assert load_context(str(tmp_path / "a.json")) == {"x": [1, 2], "y": "z"}
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ContextError, match="invalid JSON in .*bad.json"):
        load_context(str(tmp_path / "bad.json"))
    (tmp_path / "scalar.json").write_text("42")
    with pytest.raises(ContextError, match="scalar.json: unsupported context type int"):
        load_context(str(tmp_path / "scalar.json"))


@pytest.mark.parametrize("extension", [".jsonl", ".ndjson"])
def test_load_jsonl(tmp_path: Path, extension: str) -> None:
    path = tmp_path / f"rows{extension}"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert load_context(str(path)) == [{"a": 1}, {"a": 2}]
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": oops}\n')
    with pytest.raises(ContextError, match=r"invalid JSON on line 3 of .*rows"):
        load_context(str(path))


def test_load_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('name,note\nann,"multi\nline"\nbob,plain\n', encoding="utf-8-sig")
    assert load_context(str(path)) == [{"name": "ann", "note": "multi\nline"}, {"name": "bob", "note": "plain"}]


def test_load_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.json").write_text('{"k": 1}')
    (tmp_path / "sub" / "c.md").write_text("# sea")
    (tmp_path / ".hidden.txt").write_text("secret")
    (tmp_path / ".git" / "config").write_text("secret")
    assert load_context(str(tmp_path)) == [
        {"path": str(tmp_path / "a.json"), "content": {"k": 1}},
        {"path": str(tmp_path / "b.txt"), "content": "bee"},
        {"path": str(tmp_path / "sub" / "c.md"), "content": "# sea"},
    ]


def test_load_glob(tmp_path: Path) -> None:
    for name in ("x2.txt", "x1.txt", "y.txt"):
        (tmp_path / name).write_text(name)
    assert load_context(str(tmp_path / "x*.txt")) == [
        {"path": str(tmp_path / "x1.txt"), "content": "x1.txt"},
        {"path": str(tmp_path / "x2.txt"), "content": "x2.txt"},
    ]
    assert load_context(str(tmp_path / "y?txt")) == [{"path": str(tmp_path / "y.txt"), "content": "y.txt"}]


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("missing.txt", "no such file or directory: "),
        ("*.nothing", "no files match "),
        ("empty", "no files in directory "),
    ],
)
def test_load_errors_name_the_path(tmp_path: Path, relative: str, expected: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".only-hidden").write_text("x")
    target = str(tmp_path / relative)
    with pytest.raises(ContextError) as info:
        load_context(target)
    assert str(info.value) == expected + target + (" (hidden files are skipped)" if relative == "empty" else "")


def test_load_empty_or_binary_looking_files_fail_the_context_check(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ContextError, match=r"empty\.txt: the context is empty"):
        load_context(str(tmp_path / "empty.txt"))
    (tmp_path / "nul.txt").write_text("a\x00b")
    with pytest.raises(ContextError, match=r"binary file: .*nul\.txt"):  # a NUL byte: refused as binary
        load_context(str(tmp_path / "nul.txt"))
