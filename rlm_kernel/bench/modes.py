"""The paper's Table 1 modes: `direct` (the base model on the whole prompt), `rlm`, and `rlm-no-subcalls`.

`rlm-no-subcalls` is the paper's ablation ("RLM depth=0"): the root keeps its REPL but has no
`llm_query`, `llm_query_batched`, `rlm_query` or `rlm_query_batched`, which is the engine's
`sub_calls=False`.
"""

MODES = ("rlm", "rlm-no-subcalls", "direct")
