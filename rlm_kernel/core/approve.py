"""Approval of model-written code before it runs (`RLM(approve=...)`, `%%rlm --approve`)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from rlm_kernel.core.errors import ApprovalUnavailable

# (code, node id, depth) -> True to run the block.
Approver = Callable[[str, str, int], bool]
DECLINED = "(not run: the user declined this block. Propose something else, or submit what you have.)"


def console_approver() -> Approver:
    """Shows each block on the terminal and asks; refuses up front when stdin is not a terminal."""
    if not sys.stdin or not sys.stdin.isatty():
        raise ApprovalUnavailable(
            "approve=True needs an interactive terminal to ask on; pass approve=<callable(code, node_id, depth) -> bool> instead"
        )

    def approve(code: str, node_id: str, depth: int) -> bool:
        print(f"\n--- model-written code ({node_id}, depth {depth}) ---\n{code.rstrip()}\n---")
        return input("Run this block? [y/N] ").strip().lower() in ("y", "yes")

    return approve
