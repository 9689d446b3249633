"""Every message the magics show a user, in one place."""

from __future__ import annotations

DEMO_MODEL = "scripted/demo"

NO_MODEL_NOTE = (
    "No model configured: using the offline **demo policy** (`scripted/demo`), a scripted stand-in that "
    'follows a fixed strategy, not a model. Set one with `%config RLMMagics.model = "openai/gpt-4o-mini"`, '
    "the `RLM_MODEL` environment variable, or `%%rlm --model ...`."
)
NO_CONTEXT = "No context: pass --context NAME (a notebook variable) or load one with %rlm load PATH."
UNKNOWN_VARIABLE = "No variable named {name!r} in the notebook."
DEFAULT_CONTEXT_GONE = (
    "The default context {name!r} (from %rlm load) no longer exists; load it again or pass --context."
)
EMPTY_QUESTION = "No question: write it in the cell body under %%rlm, after %rlm on the line, or in a variable (--question-from NAME)."
QUESTION_TWICE = "Two questions: the cell body and --question-from {name}; keep one of them."
LOADED = "Loaded {description} from `{source}` into `{name}`; it is now the default context for %%rlm."
SUBCOMMAND_HINT = "To ask a question that starts with {word!r}, put it in a %%rlm cell."
CONFIG_USAGE = "usage: %rlm config [--changed]  (--changed: only the settings not at their default)"
NOTHING_CHANGED = "Every setting is at its default (`%rlm config` lists them all)."
NO_RUNS = "No RLM runs in this session yet."
NO_SUCH_RUN = "No run {number}: this session has runs 1 to {count}."
NO_SUCH_NODE = "No node {node!r} in run {number}; its nodes are {nodes}."
NO_SUCH_ITERATION = "Node {node} has no iteration {iteration} with code."
NO_CODE = "Node {node} ran no code."
INSERTED = "Inserted the code of {node}:{iteration} in a new cell below; its first lines bind the names the model had."
INSERT_USAGE = "usage: %rlm insert NODE[:ITERATION] [--run N] [--live]  (--live: sub-model calls ask the model)"
INSERTED_RUN_GONE = (
    "This cell was inserted from run {number}, which this kernel no longer has (it restarted?): "
    "run its %%rlm cell again and insert the block anew"
)
INSERTED_NOT_LIVE = "Run {number} was a replay, which has no live models: insert the block without --live"
NEAR_MISS = (
    "unknown subcommand {word}: did you mean {suggestion}? (To ask a one-word question, put it in a %%rlm cell.)"
)
DIFF_USAGE = "usage: %rlm diff RUN_A RUN_B  (run numbers, as %rlm history lists them)"
SAME_CODE = "Both runs ran the same code."
ALIAS_USAGE = "usage: %rlm alias NAME MODEL  (then --model NAME); %rlm alias --remove NAME; %rlm alias lists them"
BAD_ALIAS = "An alias is one word with no '/' (model names have one): {name!r} is not"
ALIASED = "`{name}` now stands for `{model}` in --model, --sub-model and %config RLMMagics.model."
ALIAS_REMOVED = "Removed the alias `{name}`."
NO_SUCH_ALIAS = "No alias named {name!r}: %rlm alias lists them"
NO_ALIASES = "No aliases yet: %rlm alias NAME MODEL sets one."
MODELS_USAGE = "usage: %rlm models [PROVIDER]  (PROVIDER: every chat model litellm knows for it)"
MODELS_MORE = (
    "`%rlm models PROVIDER` lists all of a provider's models. A local OpenAI-compatible server serves the models it "
    "has: pass `--model openai/NAME --api-base URL`."
)
NO_PROVIDER_KEYS = (
    "No provider key is set in this kernel's environment (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...): litellm lists "
    "models for the providers whose keys it finds."
)
NO_PROVIDER = "litellm lists no chat models for {provider!r} with the keys set here; providers with keys: {providers}"
UNPRICED_BUDGET = "⚠ {warning}"
INTERRUPTED = "interrupted after {seconds:.1f} s: partial trace in rlm_last"
REBOUND = "The model rebound your {variables} {names}; the previous values are in `rlm_last.replaced`."
# What a setting left unset means, where "None" would not say it.
UNSET_MEANS = {
    "sub_model": "same as model",
    "sub_api_base": "same as api_base",
    "sub_api_key": "same as api_key",
    "child_max_iterations": "half of max_iterations, at least 3",
}
BATCH_VIEW_HELP = (
    "Show a live view of each RLM.batch / abatch in this notebook (counts, then a row a question with its call "
    "tree), left as a static page when it ends; False: none (a batch's own view=False leaves out one)"
)
BATCH_ROWS_HIDDEN = (
    "{count:,} more questions have no row here (the first ones and the failed ones do): the counts above include "
    "them, and each result's .trace holds its call tree"
)
RUN_FAILED = "RLM run {status}: {error} (the partial trace is in rlm_last; %rlm show redisplays it)"
STOPPED_AT_LIMIT = "Stopped at max_iterations without a submitted answer; this is the model's last reply."
BAD_VALUE = "Bad value for {option}: {error}"
EXPORT_USAGE = "usage: %rlm export PATH.ipynb [--run N] [--with-context | --no-context]"
EXPORTED = "Wrote `{path}` ({cells:,} cells); context: {context}."
EXPORT_CANNOT_RERUN = " It reads as a report but cannot re-run as it is (its header says how to give it the context)."
REPLAY_USAGE = "usage: %rlm replay EXPORT.ipynb|TRACE.jsonl [--context NAME]"
REPLAY_MATCHES = "Replayed offline: the run ended as recorded ({status}), with the same answer."
REPLAY_MISMATCH = "The replay ended differently from the recorded run: recorded {recorded}, replayed {replayed}."
REPLAY_STARTED = "Replaying {node}: {query} Run the cells below in order; each depth-0 block runs when its cell runs."
NO_REPLAY = "No replay is running: run the hidden setup cell (%rlm_replay) near the top of this notebook first."
STEP_USAGE = "usage: %%rlm_step NODE iteration I block B (from 1), with the block's code as the cell body"
SETUP_USAGE = "usage: %rlm_replay ID [--context NAME] [--from PATH.ipynb] (older exports: %%rlm_replay with the data)"
REPLAY_DATA_NOT_FOUND = (
    "The replay data {id} is kept in this notebook's file, and the kernel found no notebook holding it in its "
    "folder {cwd}: run the notebook from its own folder, or name the file with %rlm_replay {id} --from PATH.ipynb"
)
REPLAY_FROM_MISSING = "--from {path}: there is no such file"
REPLAY_DATA_NOT_IN = "{path} holds no replay data {id}: name the exported notebook this cell comes from"
REPLAY_CODE_NOT_SHOWN = (
    "the replay data's replies hold code that no recorded block shows (the payload was changed): "
    "nothing of it was run; export the run again"
)
APPROVE_NEEDS_INPUT = (
    "--approve asks before each model-written block runs, and this frontend cannot answer input requests "
    "(nbconvert, papermill and other headless runs cannot). Run the cell in JupyterLab, Notebook or a terminal, "
    "or drop --approve."
)
APPROVE_HEADER = "**{node}** (depth {depth}) wants to run this block:"
APPROVE_PROMPT = "Run it? [y/N] "
UNKNOWN_OBJECT = "{option} {name}: there is no notebook variable called {name}"
WRONG_OBJECT = "{option} {name}: expected {wanted}, but {name} is a {got}"
