"""Run inside another environment by tests/test_install.py: drives that environment's kernels.

Usage: python install_probe.py KERNEL_NAME CODE [CODE...]. Starts the named kernel with that
environment's jupyter_client, runs each CODE as one cell, and prints one JSON line: for each cell
its reply status and what it sent to iopub (stream text, display and result data, errors), plus the
kernel's kernel_info reply.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from jupyter_client.manager import start_new_kernel

CELL_TIMEOUT_S = 120


def run_cells(kernel_name: str, cells: list[str]) -> dict[str, Any]:
    manager, client = start_new_kernel(kernel_name=kernel_name, startup_timeout=120)
    try:
        info = client.kernel_info(reply=True, timeout=60)["content"]
        results = []
        for code in cells:
            outputs: list[dict[str, Any]] = []

            def keep(msg: dict[str, Any], outputs: list[dict[str, Any]] = outputs) -> None:
                kind = msg["header"]["msg_type"]
                if kind == "stream":
                    outputs.append({"type": kind, "text": msg["content"]["text"]})
                elif kind in ("display_data", "execute_result"):
                    outputs.append({"type": kind, "data": {k: str(v) for k, v in msg["content"]["data"].items()}})
                elif kind == "error":
                    outputs.append({"type": kind, "text": f"{msg['content']['ename']}: {msg['content']['evalue']}"})

            reply = client.execute_interactive(code, output_hook=keep, timeout=CELL_TIMEOUT_S)
            results.append({"code": code, "status": reply["content"]["status"], "outputs": outputs})
        return {
            "kernel_info": {k: info.get(k) for k in ("implementation", "banner", "language_info")},
            "cells": results,
        }
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


if __name__ == "__main__":
    print(json.dumps(run_cells(sys.argv[1], sys.argv[2:])))
