"""The run settings as command-line options, generated from core's table for `rlm run` and `rlm bench`."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from rlm_kernel.core.settings import SETTINGS


def add_setting_options(parser: argparse.ArgumentParser, skip: Iterable[str] = ()) -> None:
    """One option per run setting (its `cli` flags); `skip` names settings a command uses its flags for."""
    skipped = set(skip)
    for setting in SETTINGS:
        if setting.name in skipped:
            continue
        env = f" (default: ${setting.env}, else {setting.default!r})" if setting.env else ""
        if setting.cli and setting.type is bool:
            parser.add_argument(*setting.cli, dest=setting.name, action="store_true", default=None, help=setting.help)
        elif setting.cli:
            parser.add_argument(*setting.cli, dest=setting.name, type=setting.parse, help=setting.help + env)
        for flag, value in setting.flag_values.items():
            parser.add_argument(
                flag, dest=setting.name, action="store_const", const=value, help=f"{setting.name}={value}"
            )


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (the rest are left to the environment and the defaults)."""
    return {s.name: getattr(args, s.name) for s in SETTINGS if getattr(args, s.name, None) is not None}
