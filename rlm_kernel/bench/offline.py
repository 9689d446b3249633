"""Offline stand-ins for a model on the benchmark tasks: plumbing checks, never a model's accuracy.

`BenchPolicy` is not a model and understands nothing. It follows a fixed RLM strategy per
task family and writes real REPL code for it: look at the context, grep it, partition it,
fan sub-calls out with `llm_query_batched`, compute the answer in Python and submit it. As a
sub-model it extracts needles and labels lines with the keyword baseline (`questions.keyword_label`,
which the OOLONG-like grammar is built to defeat: expect its OOLONG scores to be low); given a
direct prompt it does the same on the text it was shown. It runs the whole harness end to end in
CI; its scores only say that generators, scorers and plumbing agree.

    rlm bench sniah --model scripted/bench --sizes 8k --n 2
    rlm serve-model --policy rlm_kernel.bench.offline:BenchPolicy      # the same over HTTP

`SideBySidePolicy` is the portable form used by `rlm bench perf` to drive this engine and the
reference package `rlms` with the same code (plain Python, the `answer` dict), and it counts
root-model requests and their input tokens.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from rlm_kernel.bench import browsecomp, codeqa, hotpotqa
from rlm_kernel.bench.questions import LABELS, keyword_label
from rlm_kernel.bench.tasks import DIRECT_INTRO
from rlm_kernel.core.prompts import NO_SUB_CALLS_NOTE
from rlm_kernel.models.policies import Messages, messages_tokens, register_policy

OFFLINE_MARK = "[offline stand-in, not a model]"
MODEL = "scripted/bench"
COUNTERS_REQUEST = "bench:counters"
_FENCE = "`" * 3
_NEEDLE_ASK = "Find the special magic number for"
_LABEL_ASK = "Label the category of each data line below. Reply with one line per data line: date || user || category."
_QUESTION = re.compile(r"^(?:Question|Answer the following): (.*?)(?:\n\nThe context \(variable|\Z)", re.M | re.S)
# Families the stand-in answers with a reference solver that reads only the context's text.
_SOLVERS = {
    "Exact Answer: ...": "browsecomp",
    "letter of the correct option": "codeqa",
    "Only give me the answer and do not output any other words.": "hotpotqa",
}
_SUBMIT = {
    "browsecomp": "'Exact Answer: ' + str(found)",
    "codeqa": "f'Answer: ({found})'",
    "hotpotqa": "'Answer: ' + found",
}
# RULER's needle question and needle sentence, for numbers and UUIDs, one value or several
_NEEDLE_QUESTION = re.compile(r"magic (?:number|uuid)s? for (\S+) mentioned")
_NEEDLE_SENTENCE = r"special magic (?:number|uuid)s? for {key} is: ([0-9a-f-]+)"
_LINE = re.compile(r"^Date: (.+?) \|\| User: (\d+) \|\| Instance: (.*)$", re.MULTILINE)
_DAY = "day = lambda s: dt.datetime.strptime(s, '%b %d, %Y').date()"


def _block(prose: str, code: str) -> str:
    return f"{OFFLINE_MARK} {prose}\n{_FENCE}repl\n{code}\n{_FENCE}\n"


class BenchPolicy:
    """Root, sub-model and direct-prompt stand-in for S-NIAH, OOLONG-like, OOLONG-Pairs-like and fan-out.

    `portable=True` writes only plain Python and the `answer` dict (no peek/grep/partition),
    so the same replies run in this engine and in the reference package.
    """

    def __init__(self, portable: bool = False) -> None:
        self.portable = portable

    def __call__(self, messages: Messages) -> str:
        if messages[0]["role"] == "system":
            found = _QUESTION.search(str(messages[1]["content"]))
            turn = sum(1 for m in messages if m["role"] == "assistant")
            subcalls = NO_SUB_CALLS_NOTE not in str(messages[0]["content"])
            return self._root(found.group(1) if found else "", turn, subcalls)
        prompt = str(messages[-1]["content"])
        if prompt.startswith(DIRECT_INTRO):
            return _direct(prompt)
        if prompt.startswith(_NEEDLE_ASK):
            return _find_needle(prompt.split("\n\n", 1)[0].removeprefix(_NEEDLE_ASK).split()[0], prompt) or "NONE"
        if prompt.startswith(_LABEL_ASK):
            return "\n".join(f"{d} || {u} || {keyword_label(i)}" for d, u, i in _LINE.findall(prompt))
        return "ok"  # fan-out prompts

    def _root(self, question: str, turn: int, subcalls: bool = True) -> str:
        fan_out = re.match(r"fan out (\d+) prompts", question)
        if fan_out:
            return _block("One batch of sub-calls, timed.", _fan_out_code(int(fan_out.group(1))))
        needle = _NEEDLE_QUESTION.search(question)
        if needle:
            return self._needle(needle.group(1), turn, subcalls)
        if turn == 0:
            look = "print(len(context), 'characters,', context.count(chr(10)), 'lines')\nprint(peek(0, 600))"
            return _block("I look at the size and the first lines.", look)
        solver = next((module for cue, module in _SOLVERS.items() if cue in question), None)
        if solver:
            code = (
                f"from rlm_kernel.bench.{solver} import solve_from_text\nfound = solve_from_text(context, {question!r})\n"
                + f"FINAL({_SUBMIT[solver]})"
            )
            return _block("I parse the documents and follow the question's hops in code.", code)
        if turn == 1 and not subcalls:
            return _block("No sub-calls here: I label every line in code with keyword rules.", _local_label_code())
        if turn == 1:
            return _block("I label every line with sub-calls on chunks of the context.", _label_code())
        compute = answer_code(question)
        if compute is None:
            return _block("I do not know this question.", "FINAL('the offline stand-in cannot answer this question')")
        return _block("I compute the answer from the labels and submit it.", f"{compute}\nFINAL(result)")

    def _needle(self, key: str, turn: int, subcalls: bool = True) -> str:
        if turn == 1 and not subcalls:
            code = f"import re\nfound = re.findall(r'{_NEEDLE_SENTENCE.format(key=re.escape(key))}', context)"
            return _block("No sub-calls here: I search the context in code.", code)
        if turn == 0:
            if self.portable:
                return _block("I look at the context.", "print(len(context), 'characters')\nprint(context[:200])")
            look = (
                "import re\nprint(len(context), 'characters')\nprint(peek(0, 200))\n"
                "hits = grep(r'special magic number', flags=re.IGNORECASE)\n"
                "print(len(hits), 'lines mention a special magic number:', hits[:3])"
            )
            return _block("I look at the context and grep for the needle's wording.", look)
        if turn == 1:
            chunks = (
                "chunks = [context[i:i + 100_000] for i in range(0, len(context), 100_000)]"
                if self.portable
                else f"chunks = [c for c in partition(n=8) if {key!r} in c]"
            )
            ask = f"{_NEEDLE_ASK} {key} in the text below. Reply with the number only, or NONE.\n\n"
            code = (
                f"{chunks}\nask = {ask!r}\nreplies = llm_query_batched([ask + c for c in chunks])\n"
                "found = [r.strip() for r in replies if r.strip() != 'NONE']\n"
                "print(len(chunks), 'chunks searched; found:', found)"
            )
            return _block("I ask a sub-model to find the number in each chunk.", code)
        submit = "answer['content'] = ', '.join(found) if found else 'not found'\nanswer['ready'] = True"
        return _block("I submit what the sub-calls found.", submit)


class SideBySidePolicy:
    """The portable BenchPolicy, counting root requests and their input tokens (the same count the server reports).

    A request whose only message is `bench:counters` gets the counts as JSON, so a harness
    can read them from an `rlm serve-model` process.
    """

    def __init__(self) -> None:
        self._policy = BenchPolicy(portable=True)
        self._lock = threading.Lock()
        self.counters = {"root_requests": 0, "root_input_tokens": 0, "sub_requests": 0}

    def __call__(self, messages: Messages) -> str:
        if len(messages) == 1 and messages[0].get("content") == COUNTERS_REQUEST:
            with self._lock:
                return json.dumps(self.counters)
        root = messages[0]["role"] == "system"
        with self._lock:
            if root:
                self.counters["root_requests"] += 1
                self.counters["root_input_tokens"] += messages_tokens(messages)
            else:
                self.counters["sub_requests"] += 1
        return self._policy(messages)


def register() -> str:
    """Register BenchPolicy as `scripted/bench` (idempotent) and return the model name."""
    return register_policy(BenchPolicy(), MODEL.removeprefix("scripted/"))


def _fan_out_code(n: int) -> str:
    return (
        "import time\nt0 = time.perf_counter()\n"
        f"replies = llm_query_batched(['fan-out prompt ' + str(i) for i in range({n})])\n"
        "elapsed = time.perf_counter() - t0\n"
        "answer['content'] = str(round(elapsed, 4)) + ' ' + str(sum(1 for r in replies if r == 'ok'))\n"
        "answer['ready'] = True"
    )


def _label_code() -> str:
    return (
        f"ask = {_LABEL_ASK!r}\nchunks = partition(size=20_000)\n"
        "replies = llm_query_batched([ask + chr(10) + chr(10) + c for c in chunks])\n"
        "records = []\nfor reply in replies:\n    for row in reply.splitlines():\n"
        "        date, user, label = row.split(' || ')\n        records.append((date, int(user), label))\n"
        "print(len(records), 'lines labelled; first:', records[:2])"
    )


def _local_label_code() -> str:
    return (
        "import re\nfrom rlm_kernel.bench.questions import keyword_label\n"
        "line = re.compile(r'^Date: (.+?) [|][|] User: (\\d+) [|][|] Instance: (.*)$', re.M)\n"
        "records = [(d, int(u), keyword_label(i)) for d, u, i in line.findall(context)]\n"
        "print(len(records), 'lines labelled; first:', records[:2])"
    )


def _find_needle(key: str, text: str) -> str | None:
    found = re.findall(_NEEDLE_SENTENCE.format(key=re.escape(key)), text)
    return ", ".join(found) if found else None


def _direct(prompt: str) -> str:
    """The baseline: answer from the text shown in one prompt (cut to the window, maybe)."""
    text, _, question = prompt.rpartition("\n\nQuestion: ")
    text = text.partition("<text>\n")[2].rpartition("\n</text>")[0]
    needle = _NEEDLE_QUESTION.search(question)
    if needle:
        value = _find_needle(needle.group(1), text)
        return f"{OFFLINE_MARK} " + (f"The special magic number is {value}." if value else "I did not find it.")
    solver = next((module for cue, module in _SOLVERS.items() if cue in question), None)
    if solver == "browsecomp":
        return f"{OFFLINE_MARK} Exact Answer: {browsecomp.solve_from_text(text, question)}"
    if solver == "codeqa":
        return f"{OFFLINE_MARK} Answer: ({codeqa.solve_from_text(text, question)})"
    if solver == "hotpotqa":
        return f"{OFFLINE_MARK} Answer: {hotpotqa.solve_from_text(text, question)}"
    compute = answer_code(question)
    if compute is None:
        return f"{OFFLINE_MARK} I do not know this question."
    # The same code the root would run in the REPL, over the lines this prompt shows.
    namespace: dict[str, Any] = {"records": [(d, int(u), keyword_label(i)) for d, u, i in _LINE.findall(text)]}
    try:
        exec(compute, namespace)
    except (ValueError, IndexError) as exc:  # no line of the asked label survived the cut
        return f"{OFFLINE_MARK} I cannot tell: {exc}"
    return f"{OFFLINE_MARK} {namespace['result']}"


def answer_code(question: str) -> str | None:
    """Python that sets `result` from `records` [(date, user, label)], for a question the stand-in knows."""
    quoted = re.findall(r"label '([^']+)'", question)
    extreme = re.search(r"which of the 6 categories is the (most|least) common", question)
    if extreme:
        pick = "max" if extreme.group(1) == "most" else "min"
        return (
            "from collections import Counter\ncounts = Counter(label for _, _, label in records)\n"
            f"result = 'Label: ' + {pick}({list(LABELS)!r}, key=lambda label: counts[label])"
        )
    if "should be classified as label" in question:
        return f"result = 'Answer: ' + str(sum(1 for r in records if r[2] == {quoted[0]!r}))"
    if "more common, less common, or the same frequency as" in question:
        a, b = quoted[0], quoted[1]
        return (
            f"a = sum(1 for r in records if r[2] == {a!r})\nb = sum(1 for r in records if r[2] == {b!r})\n"
            "relation = 'more common than' if a > b else 'less common than' if a < b else 'same frequency as'\n"
            f"result = 'Answer: ' + {a!r} + ' is ' + relation + ' ' + {b!r}"
        )
    if "which user has the most instances" in question:
        return (
            "from collections import Counter\n"
            f"result = 'User: ' + str(Counter(r[1] for r in records if r[2] == {quoted[0]!r}).most_common(1)[0][0])"
        )
    between = re.search(r"dated between (.+?) and (.+?), both included", question)
    if between:
        return (
            f"import datetime as dt\n{_DAY}\nstart, end = day({between.group(1)!r}), day({between.group(2)!r})\n"
            f"result = 'Answer: ' + str(sum(1 for r in records if r[2] == {quoted[0]!r} and start <= day(r[0]) <= end))"
        )
    if "occur for the first time" in question:
        return (
            f"import datetime as dt\n{_DAY}\n"
            f"result = 'Date: ' + min(day(r[0]) for r in records if r[2] == {quoted[0]!r}).strftime('%m/%d/%Y')"
        )
    if "list all pairs of user IDs" in question:
        condition = _pair_condition_code(question, quoted)
        return None if condition is None else _pairs_code(condition)
    return None


def _pair_condition_code(question: str, quoted: list[str]) -> str | None:
    """`def ok(u, v)` for the pair question's condition."""
    if "one user has at least two instances" in question:
        a, b, c = quoted
        return (
            f"def second(p):\n    return count[p][{b!r}] >= 1 and count[p][{c!r}] >= 1\n"
            f"def ok(u, v):\n    return (count[u][{a!r}] >= 2 and second(v)) or (count[v][{a!r}] >= 2 and second(u))"
        )
    if "exactly one instance" in question:
        return f"def ok(u, v):\n    return count[u][{quoted[0]!r}] == 1 and count[v][{quoted[0]!r}] == 1"
    if "or the label" in question:
        fits = f"count[u][{quoted[0]!r}] + count[u][{quoted[1]!r}] > 0"
        after = re.search(r"are dated after (.+?)\.", question)
        if after:
            fits += f" and all(x > day({after.group(1)!r}) for x in dates[u][{quoted[2]!r}])"
        return f"def fits(u):\n    return {fits}\ndef ok(u, v):\n    return fits(u) and fits(v)"
    return None


def _pairs_code(condition: str) -> str:
    return (
        f"import datetime as dt\nfrom collections import Counter, defaultdict\n{_DAY}\n"
        "count, dates = defaultdict(Counter), defaultdict(lambda: defaultdict(list))\n"
        "for d, user, label in records:\n    count[user][label] += 1\n    dates[user][label].append(day(d))\n"
        f"{condition}\nusers = sorted(count)\n"
        "pairs = [(u, v) for i, u in enumerate(users) for v in users[i + 1:] if ok(u, v)]\n"
        "result = chr(10).join('(' + str(u) + ', ' + str(v) + ')' for u, v in pairs) or '[]'"
    )
