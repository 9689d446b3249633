"""Install the `rlm` kernelspec for the current interpreter (`python -m rlm_kernel install`).

`pip install rlm_kernel` already ships `kernelspec/rlm` as wheel shared-data; this installer is
for editable installs (which skip shared-data) and for custom names or locations.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

from rlm_kernel.formats.notebook import DISPLAY_NAME, KERNEL_NAME


def kernel_spec_dict(executable: str, display_name: str = DISPLAY_NAME) -> dict[str, Any]:
    """The kernel.json contents; the single source of truth for `kernelspec/rlm/kernel.json` too."""
    return {
        "argv": [executable, "-m", "rlm_kernel.jupyter.kernel", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "signal",
        # Keep litellm and Hugging Face from reaching the network at import time.
        "env": {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"},
        # As ipykernel's own spec: IPKernelApp can debug and can run CurveZMQ-encrypted transport.
        "metadata": {"debugger": True, "supported_encryption": "curve"},
    }


def install(
    user: bool = False, prefix: str | None = None, name: str = KERNEL_NAME, display_name: str = DISPLAY_NAME
) -> str:
    """Write the kernelspec (argv[0] = this interpreter) and return the directory it went to.

    As in `KernelSpecManager.install_kernel_spec`: `user` for the per-user Jupyter data dir,
    `prefix` for `PREFIX/share/jupyter/kernels`, neither for the system-wide dir.
    """
    with tempfile.TemporaryDirectory() as tmp:
        spec = kernel_spec_dict(sys.executable, display_name)
        (Path(tmp) / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
        return KernelSpecManager().install_kernel_spec(tmp, name, user=user, prefix=prefix)


def in_virtualenv() -> bool:
    """True when running from a venv/virtualenv."""
    return sys.prefix != sys.base_prefix


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `install` subcommand's options."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument("--sys-prefix", action="store_true", help=f"install into sys.prefix ({sys.prefix})")
    where.add_argument("--prefix", help="install into PREFIX/share/jupyter/kernels")
    parser.add_argument("--name", default=KERNEL_NAME, help="kernelspec name (default: %(default)s)")
    parser.add_argument("--display-name", default=DISPLAY_NAME, help="name shown in Jupyter (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Install where the options say; by default into the venv when in one, else for the user."""
    prefix = args.prefix
    if args.sys_prefix or (not args.user and prefix is None and in_virtualenv()):
        prefix = sys.prefix
    path = install(user=prefix is None, prefix=prefix, name=args.name, display_name=args.display_name)
    print(f"Installed kernelspec {args.name} in {path}")
    return 0
