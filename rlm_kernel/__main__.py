"""`python -m rlm_kernel`: the `rlm` command, the same parser and subcommands (`python -m rlm_kernel install`)."""

from rlm_kernel.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
