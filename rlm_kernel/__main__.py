"""`python -m rlm_kernel install [...]`: set up the `rlm` Jupyter kernel."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rlm_kernel.jupyter import install


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the subcommand; argparse exits 2 on a missing or unknown one."""
    parser = argparse.ArgumentParser(prog="python -m rlm_kernel")
    sub = parser.add_subparsers(dest="command", required=True)
    install.add_arguments(sub.add_parser("install", help="install the rlm Jupyter kernelspec"))
    args = parser.parse_args(argv)
    return install.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
