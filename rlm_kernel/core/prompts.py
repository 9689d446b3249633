"""Prompts, generated from what this run can actually do (never a hand-kept list)."""

from __future__ import annotations

from dataclasses import dataclass

from rlm_kernel.core.ledger import Limits


@dataclass(frozen=True)
class Capabilities:
    depth: int
    max_depth: int
    max_iterations: int
    max_output_chars: int
    sub_model: str
    limits: Limits
    concurrency: int
    cell_timeout: float | None
    sub_capacity_chars: int | None = None  # the longest prompt a sub-call takes (None: not known)
    tools: str = ""  # the user's tools, one line each (custom_tools.describe_tools)
    instructions: str | None = None  # the user's domain guidance
    answer_shape: str | None = None  # what a typed answer must be (typed.AnswerType.shape)
    sub_calls: bool = True  # False: no llm_query / rlm_query in this run (the paper's ablation)

    @property
    def can_recurse(self) -> bool:
        return self.depth + 1 < self.max_depth


NO_SUB_CALLS_NOTE = (
    "There are no sub-model calls in this run: llm_query, llm_query_batched, rlm_query and rlm_query_batched "
    "do not exist. Work with code alone."
)


def system_prompt(cap: Capabilities) -> str:
    recursion = (
        f"- `rlm_query(context, query, model=None)`: start a child RLM (depth {cap.depth + 1} of at most "
        f"{cap.max_depth - 1}) with its own REPL whose `context` is the value you pass and whose question "
        "is `query`; returns its answer. Use it for sub-problems that need their own code and exploration.\n"
        "- `rlm_query_batched(pairs)`: `[(context, query), ...]` run as children in parallel; returns answers in order."
        if cap.can_recurse
        else "- `rlm_query(context, query, model=None)` and `rlm_query_batched(pairs)`: the recursion depth limit is "
        "reached here, so these make a plain sub-model call on `query` followed by `context` (same as llm_query)."
    )
    capacity = (
        f" A prompt may hold at most about {cap.sub_capacity_chars:,} characters; longer ones are not sent: "
        "split the text and ask about each part."
        if cap.sub_capacity_chars
        else ""
    )
    limits = [f"{cap.max_iterations} iterations (replies) for this call"]
    if cap.limits.max_llm_calls is not None:
        limits.append(f"{cap.limits.max_llm_calls} model calls for the whole tree")
    if cap.limits.max_tokens is not None:
        limits.append(f"{cap.limits.max_tokens:,} tokens for the whole tree")
    if cap.limits.max_cost_usd is not None:
        limits.append(f"${cap.limits.max_cost_usd:g} for the whole tree")
    if cap.limits.max_seconds is not None:
        limits.append(f"{cap.limits.max_seconds:g} seconds of wall time")
    if cap.cell_timeout:
        limits.append(f"each code block may run {cap.cell_timeout:g} s at most")
    tools = f"\nThe user's own functions, also in the REPL:\n{cap.tools}\n" if cap.tools else ""
    sub_calls = (
        f"""- `llm_query(prompt, model=None)`: ask a sub-model ({cap.sub_model}) one question; it sees only `prompt`. Put the \
text it needs in the prompt (a chunk of the context) and ask for a short, structured reply. Returns a string.\
{capacity}
- `llm_query_batched(prompts, model=None)`: many prompts concurrently (up to {cap.concurrency} at a time); \
returns replies in order; a failed prompt's slot holds its error text. Prefer this to a loop of llm_query.
{recursion}
"""
        if cap.sub_calls
        else ""
    )
    no_sub_calls = "" if cap.sub_calls else f"\n\n{NO_SUB_CALLS_NOTE}"
    shape = (
        f"\n\nThe answer must be {cap.answer_shape}. A submission that does not fit is refused with the reason."
        if cap.answer_shape
        else ""
    )
    guidance = f"\n\nInstructions from the user:\n{cap.instructions.strip()}" if cap.instructions else ""
    return f"""You answer a question about a context that is too large to read in one prompt. The context is NOT in \
this conversation: it is the variable `context` in a persistent Python REPL. You explore it by writing code.

How to act:
- Reply with a short plan in prose and one or more ```repl code blocks. The blocks run in order in the same \
namespace; variables persist across replies. Only executed code produces output: never write what you expect \
the output to be.
- You then see each block's output: stdout, stderr, the value of a trailing expression (as in a notebook), \
and tracebacks. Output longer than {cap.max_output_chars:,} characters is cut to its head and tail; keep large \
results in variables and print slices, counts or summaries.
- Look at the context before answering: its size, its structure, a sample.

Functions in the REPL:
- `context`: the data.
- `peek(start=0, n=2000)`: a slice of the context (characters of a string, items of a list).
- `grep(pattern, flags=0, window=0)`: regex search; matching lines with line numbers, or `window` characters around each match.
- `partition(n=None, size=None, by=None)`: split the context into n chunks, chunks of `size`, or at each match of regex `by`.
{sub_calls}- `SHOW_VARS()`: the variables you have made, with types and sizes.
{tools}
To submit your answer (the run ends at once, nothing after it runs):
- `FINAL(value)`: submit a value (a string, number, list, dict...);
- `FINAL_VAR("name")`: submit the variable called `name`;
- or set `answer["content"] = value` and then `answer["ready"] = True`.
Submit only what your executed code established. If you cannot finish, submit your best partial answer and say what is missing.

Limits: {"; ".join(limits)}. When a model call is refused for budget, aggregate what you have and submit.{shape}{guidance}\
{no_sub_calls}"""


def first_user_message(query: str, context_description: str, history: str | None = None) -> str:
    earlier = (
        f"{history}\n\nThe new question follows; the REPL still holds your earlier variables.\n\n" if history else ""
    )
    return (
        f"{earlier}Question: {query}\n\n"
        f"The context (variable `context`, not shown here):\n{context_description}\n\n"
        "Start by looking at the context with code. Do not answer before you have seen evidence."
    )


def continue_message(observation: str, iteration: int, max_iterations: int) -> str:
    left = max_iterations - iteration - 1
    note = "This is your last reply: submit your answer now." if left == 1 else f"{left} replies left."
    return f"{observation}\n\n[{note}]"


NO_CODE_MESSAGE = (
    "Your reply had no ```repl code block, so nothing ran. Write code to work on `context`, "
    'or submit with FINAL(value) / FINAL_VAR("name").'
)


def out_of_iterations_message(max_iterations: int) -> str:
    return (
        f"You have used all {max_iterations} replies; no more code will run. "
        "Give your final answer now, on one line starting with FINAL(, from what your code has shown so far."
    )


def child_stopped_message(status: str, error: str | None) -> str:
    """What rlm_query returns to the model when a child RLM ends without an answer."""
    return f"Error: the child RLM stopped ({status}): {error}"
