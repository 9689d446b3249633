"""`python -m rlm_kernel.cli`: the `rlm` command."""

from rlm_kernel.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
