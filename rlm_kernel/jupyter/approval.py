"""`%%rlm --approve` in a notebook: each model-written block is shown in the cell and runs only on a yes."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.display import Code, display

from rlm_kernel.core.approve import Approver, console_approver
from rlm_kernel.core.errors import ApprovalUnavailable
from rlm_kernel.jupyter import messages as msg


def notebook_approver(shell: Any) -> Approver:
    """Asks through the frontend's input box; refuses up front where nobody can answer.

    A kernel knows whether the frontend that sent this cell takes input requests
    (`allow_stdin`); nbconvert, papermill and most headless clients do not.
    Terminal IPython has no kernel and asks on the terminal.
    """
    kernel = getattr(shell, "kernel", None)
    if kernel is None:
        try:
            return console_approver()
        except ApprovalUnavailable:
            raise UsageError(msg.APPROVE_NEEDS_INPUT) from None
    if not getattr(kernel, "_allow_stdin", False):
        raise UsageError(msg.APPROVE_NEEDS_INPUT)

    def approve(code: str, node_id: str, depth: int) -> bool:
        header = msg.APPROVE_HEADER.format(node=node_id, depth=depth)
        display({"text/markdown": header, "text/plain": header}, raw=True)
        display(Code(code, language="python"))
        # The kernel's input(), also from a child's thread: ipykernel routes it to this cell's frontend.
        return input(msg.APPROVE_PROMPT).strip().lower() in ("y", "yes")

    return approve
