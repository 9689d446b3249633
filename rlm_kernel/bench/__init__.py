"""Benchmarks: long-context tasks (S-NIAH, OOLONG-, OOLONG-Pairs-, BrowseComp-Plus- and CodeQA-like, or the real datasets),
their runner in the paper's modes, the report, a comparison with the reference package, and performance figures.

rlm bench TASK --model M [--sub-model M] [--api-base URL] --sizes 8k,32k --n N --mode rlm|rlm-no-subcalls|direct [--out F]
rlm bench TASK --baseline --sizes 8k,32k,131k      (oolong, oolong-pairs: the keyword labeller, no model)
rlm bench TASK --data DIR ...                       (the real dataset's files: see rlm_kernel/bench/datasets.py)
rlm bench report F [F ...] [--plot score.png]
rlm bench compare TASK --ref-python PATH [--model M --api-base URL]
rlm bench perf [--quick] [--figures 1,2,...]
rlm bench features [--figures batch,session]         (batches and sessions: issue 15's figures)
rlm bench ray [--questions N]                        (thread pool against a local Ray cluster: issue 22's figures)
rlm bench reliability [--figures loaders,typed,...]  (faults, interrupts, limits and attacks, each row measured)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rlm_kernel.core.errors import RLMError

FIGURES = "rlm_kernel.bench.figures"  # not in the wheel: see its docstring
FIGURES_HINT = "git clone the project, then `make bench`; the wheel carries the tasks, not the figure scripts"
_MODULES = {"perf": f"{FIGURES}.perf", "features": f"{FIGURES}.features", "reliability": f"{FIGURES}.reliability"}


class UsageError(RLMError):
    """A user error: reported as one line with exit status 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """`rlm bench ...`: dispatch to the task runner, the report or the performance figures."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = (
        argv[0] if argv[:1] in (["perf"], ["report"], ["compare"], ["features"], ["ray"], ["reliability"]) else None
    )
    # Imported per command: the runner needs the engine, the report matplotlib (for a plot) only.
    try:
        module = importlib.import_module(_MODULES.get(command or "", f"rlm_kernel.bench.{command or 'runner'}"))
    except ModuleNotFoundError as exc:
        if exc.name != FIGURES:
            raise
        print(f"rlm bench: error: {command} runs from a source checkout ({FIGURES_HINT})", file=sys.stderr)
        return 2
    parser = _Parser(
        prog=f"rlm bench {command}" if command else "rlm bench",
        description=module.__doc__ if command else __doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    try:
        return int(module.run(parser.parse_args(argv[1:] if command else argv)))
    except UsageError as exc:
        print(f"rlm bench: error: {exc}", file=sys.stderr)
        return 2
