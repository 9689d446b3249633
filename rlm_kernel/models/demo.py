"""The demo policy: a scripted stand-in for a model, so the main job runs offline.

It is not a model and answers nothing by understanding: it follows a fixed RLM
strategy (look, grep, partition, fan out to sub-calls, submit a variable) and,
as a sub-model, extracts the lines of its prompt that mention the key term.
The engine treats it as any other model; it reaches it through litellm.

Also here: `sample_document`, a seeded long text with a few planted facts.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

from rlm_kernel.core.lm import Messages

_STOPWORDS = set(
    "about above after again against which their there these those what when where while would could should "
    "with from into that this have does each every mention mentions mentioned document context text question "
    "answer please list give tell find were been being other than then them they also only some such done went".split()
)
_EXTRACT_PREFIX = "Extract every line of the text below that mentions"


class DemoPolicy:
    """Root: a three-step RLM strategy. Sub-call: keyword line extraction."""

    def __call__(self, messages: Messages) -> str:
        if messages and messages[0]["role"] == "system":
            return self._root(messages)
        return self._sub(str(messages[-1]["content"]))

    def _root(self, messages: Messages) -> str:
        question = re.search(r"Question: (.*)", str(messages[1]["content"]))
        terms = candidate_terms(question.group(1) if question else "")
        turn = sum(1 for m in messages if m["role"] == "assistant")
        if turn == 0:
            return (
                "[demo policy, not a model] First I look at the size and the start of the context, "
                "then pick the rarest question word that occurs in it.\n"
                "```repl\n"
                "import re\n"
                "print(type(context).__name__, len(context))\n"
                "print(peek(0, 300))\n"
                f"counts = {{t: len(grep(re.escape(t), flags=re.IGNORECASE)) for t in {terms!r}}}\n"
                "found = [t for t in counts if counts[t]]\n"
                "term = min(found, key=counts.get) if found else None\n"
                "print(counts, '->', term)\n"
                "print('\\n'.join(grep(re.escape(term), flags=re.IGNORECASE)[:5]) if term else 'no term found')\n"
                "```\n"
            )
        if turn == 1:
            return (
                "[demo policy, not a model] Now I split the context into chunks, keep those that mention the term, "
                "and ask the sub-model to extract the relevant lines from each, in parallel.\n"
                "```repl\n"
                "chunks = partition(n=8)\n"
                "relevant = [c for c in chunks if term and term.lower() in str(c).lower()]\n"
                f"prompts = [f'{_EXTRACT_PREFIX} {{term}}:\\n\\n{{c}}' for c in relevant]\n"
                "findings = llm_query_batched(prompts)\n"
                "print(len(relevant), 'of', len(chunks), 'chunks mention', repr(term))\n"
                "print(findings[0][:500] if findings else 'no findings')\n"
                "```\n"
            )
        return (
            "[demo policy, not a model] I combine the sub-model findings into one answer and submit it.\n"
            "```repl\n"
            "lines = [line for f in findings for line in f.splitlines() if line.strip() and line != 'NONE']\n"
            "summary = f'{len(lines)} passages mention {term}:\\n' + '\\n'.join(lines)\n"
            "FINAL_VAR('summary')\n"
            "```\n"
        )

    def _sub(self, prompt: str) -> str:
        match = re.match(re.escape(_EXTRACT_PREFIX) + r" (.+?):\n\n", prompt)
        if not match:
            return (
                "[demo policy] I only extract lines; ask me to 'Extract every line of the text below that mentions X'."
            )
        term = match.group(1).lower()
        body = prompt[match.end() :]
        lines = [line.strip() for line in body.splitlines() if term in line.lower()]
        return "\n".join(lines) if lines else "NONE"


def candidate_terms(question: str) -> list[str]:
    """The question's quoted phrases, else its uncommon words: what the demo searches for."""
    quoted = re.findall(r"['\"“]([^'\"”]{3,60})['\"”]", question)
    if quoted:
        return quoted
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z-]{3,}", question)]
    return sorted({w for w in words if w not in _STOPWORDS}) or ["the"]


_SYSTEMS = ["coolant pump", "north antenna", "power bus", "weather mast", "data relay", "greenhouse", "rover bay"]
_ACTIONS = [
    "checked",
    "logged readings on",
    "cleaned",
    "inspected",
    "recalibrated",
    "photographed",
    "walked past",
    "noted nothing unusual at",
    "updated the checklist for",
    "tested the alarm on",
]
_WEATHER = ["clear sky", "light snow", "strong wind from the east", "fog until noon", "overcast", "calm, cold"]
_CREW = ["Ama", "Bao", "Chidi", "Dara", "Emil", "Farah", "Goran", "Hana"]
_INCIDENTS = [
    "the coolant pump stalled at 03:10; Bao replaced the worn impeller and flow returned to normal",
    "coolant pressure dropped to 40% after the storm; Farah found a cracked hose clamp and replaced it",
    "an alarm reported coolant temperature above limit; Goran traced it to a faulty sensor and swapped it",
    "the coolant reservoir was refilled after a slow leak at the north valve; Hana tightened the fitting",
]


def sample_document(n_chars: int = 2_000_000, seed: int = 7) -> str:
    """A long station log (seeded) with a few coolant incidents planted at spread-out places."""
    rng = random.Random(seed)
    lines: list[str] = []
    size = 0
    day = 0
    while size < n_chars:
        day += 1
        entry = [f"== Day {day} ==", f"Weather: {rng.choice(_WEATHER)}."]
        for _ in range(rng.randint(6, 12)):
            hour, minute = rng.randint(0, 23), rng.randint(0, 59)
            entry.append(
                f"{hour:02d}:{minute:02d} {rng.choice(_CREW)} {rng.choice(_ACTIONS)} the {rng.choice(_SYSTEMS[1:])}."
            )
        lines.extend(entry)
        size += sum(len(line) + 1 for line in entry)
    # Spread the incidents through the log so a reader must search all of it.
    for k, incident in enumerate(_INCIDENTS):
        at = (k * 2 + 1) * len(lines) // (2 * len(_INCIDENTS))
        lines.insert(at, f"INCIDENT: {incident}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m rlm_kernel.models.demo OUT.txt [N_CHARS]`: write the sample document."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m rlm_kernel.models.demo OUT.txt [N_CHARS]", file=sys.stderr)
        return 2
    out = Path(args[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(sample_document(int(args[1]) if len(args) > 1 else 2_000_000), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
