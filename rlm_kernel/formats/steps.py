"""The magic line of an exported model-written block: `%%rlm_step n0 iteration 1 block 1`.

Numbered from 1, as the headings beside it ("Iteration 1"); exports made before this numbered from 0
with bare numbers (`%%rlm_step n0 0 0`), and still replay.
"""

from __future__ import annotations

STEP_MAGIC = "%%rlm_step"


def step_line(node_id: str, iteration: int, block: int) -> str:
    """The line for block `block` of iteration `iteration` (both counted from 0, as the trace counts them)."""
    return f"{STEP_MAGIC} {node_id} iteration {iteration + 1} block {block + 1}"


def parse_step_line(args: str) -> tuple[str, int, int] | None:
    """(node, iteration, block) counted from 0, from `NODE iteration I block B` or an older `NODE I B`; None: neither."""
    parts = args.split()
    if (
        len(parts) == 5
        and parts[1] == "iteration"
        and parts[3] == "block"
        and parts[2].isdigit()
        and parts[4].isdigit()
    ):
        if int(parts[2]) >= 1 and int(parts[4]) >= 1:
            return parts[0], int(parts[2]) - 1, int(parts[4]) - 1
    elif len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    return None
