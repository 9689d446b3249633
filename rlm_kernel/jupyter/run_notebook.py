"""Execute a notebook headless (nbclient) and write it back executed, plus an HTML rendering.

    python -m rlm_kernel.jupyter.run_notebook NOTEBOOK.ipynb OUT_DIR [--kernel rlm]

The HTML leaves out the widget state so that each call tree shows as its static
`<details>` fallback, which needs no widget manager and no network.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter


def run_notebook(path: Path, out_dir: Path, kernel: str = "rlm", timeout: int = 600) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    # IPC, not TCP: the kernel is local, and over TCP it warns (on this job's output) that nothing is encrypted.
    with tempfile.TemporaryDirectory(prefix="rlm-kernel-") as sockets:
        manager = KernelManager(kernel_name=kernel, transport="ipc", ip=os.path.join(sockets, "kernel"))
        try:
            NotebookClient(
                nb, km=manager, kernel_name=kernel, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}
            ).execute()
        finally:  # a kernel manager we made is ours to shut down (nbclient only stops kernels it made)
            if manager.has_kernel:
                manager.shutdown_kernel(now=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / f"{path.stem}.executed.ipynb"
    nbformat.write(nb, executed)
    static = copy.deepcopy(nb)
    static.metadata.pop("widgets", None)
    html, _ = HTMLExporter().from_notebook_node(static)
    (out_dir / f"{path.stem}.html").write_text(html, encoding="utf-8")
    print(f"executed {path} in the {kernel!r} kernel: wrote {executed} and {out_dir / (path.stem + '.html')}")
    return nb


def rlm_answers(nb: nbformat.NotebookNode) -> list[str]:
    """The text of each %%rlm cell's answer (its execute_result)."""
    answers = []
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith("%%rlm"):
            for output in cell.get("outputs", []):
                if output.output_type == "execute_result":
                    answers.append(output.data.get("text/markdown") or output.data.get("text/plain", ""))
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--kernel", default="rlm")
    args = parser.parse_args(argv)
    try:
        nb = run_notebook(args.notebook, args.out_dir, args.kernel)
    except CellExecutionError as exc:
        print(f"error: a cell failed:\n{exc}", file=sys.stderr)
        return 1
    for answer in rlm_answers(nb):
        print("\n%%rlm answer:\n" + answer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
