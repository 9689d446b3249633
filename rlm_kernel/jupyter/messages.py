"""Every message the magics show a user, in one place."""

from __future__ import annotations

DEMO_MODEL = "scripted/demo"

NO_MODEL_NOTE = (
    "No model configured: using the offline **demo policy** (`scripted/demo`), a scripted stand-in that "
    "follows a fixed strategy, not a model. Set one with `%config RLMMagics.model = \"openai/gpt-4o-mini\"`, "
    "the `RLM_MODEL` environment variable, or `%%rlm --model ...`."
)
NO_CONTEXT = "No context: pass --context NAME (a notebook variable) or load one with %rlm load PATH."
UNKNOWN_VARIABLE = "No variable named {name!r} in the notebook."
DEFAULT_CONTEXT_GONE = "The default context {name!r} (from %rlm load) no longer exists; load it again or pass --context."
EMPTY_QUESTION = "No question: write it in the cell body under %%rlm, or after %rlm on the line."
LOADED = "Loaded {description} from `{source}` into `{name}`; it is now the default context for %%rlm."
SUBCOMMAND_HINT = "To ask a question that starts with {word!r}, put it in a %%rlm cell."
NO_RUNS = "No RLM runs in this session yet."
NO_SUCH_RUN = "No run {number}: this session has runs 1 to {count}."
NO_SUCH_NODE = "No node {node!r} in run {number}; its nodes are {nodes}."
NO_SUCH_ITERATION = "Node {node} has no iteration {iteration} with code."
NO_CODE = "Node {node} ran no code."
INSERTED = "Inserted the code of {node}:{iteration} in a new cell below."
RUN_FAILED = "RLM run {status}: {error} (the partial trace is in rlm_last; %rlm show redisplays it)"
STOPPED_AT_LIMIT = "Stopped at max_iterations without a submitted answer; this is the model's last reply."
BAD_VALUE = "Bad value for {option}: {error}"
