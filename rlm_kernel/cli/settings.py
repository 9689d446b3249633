"""The run settings as command-line options, generated from core's table for `rlm run` and `rlm bench`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.repl import isolation_modes
from rlm_kernel.core.setting import Setting
from rlm_kernel.core.settings import SETTINGS

# `rlm run --help` in four groups; a setting not named here is an execution setting, unless it comes before
# max_depth in the table (models, providers and sampling).
BUDGETS = (
    "max_depth",
    "max_iterations",
    "child_max_iterations",
    "max_llm_calls",
    "max_tokens",
    "max_cost_usd",
    "max_seconds",
    "max_output_tokens",
)
OUTPUT = ("stream", "trace_path", "telemetry")
GROUPS = {
    "model": "models, providers and sampling",
    "budgets": "limits of the whole call tree",
    "execution": "model code, model calls, safety and what the model may reuse",
    "output": "what the run shows and records",
}


def group_of(setting: Setting) -> str:
    if setting.name in BUDGETS:
        return "budgets"
    if setting.name in OUTPUT:
        return "output"
    names = [s.name for s in SETTINGS]
    return "model" if names.index(setting.name) < names.index("max_depth") else "execution"


def add_setting_options(parser: argparse.ArgumentParser, skip: Iterable[str] = ()) -> None:
    """One option per run setting (its `cli` flags), in the four groups; `skip` names settings a command uses its
    flags for. A bad value fails with the table's own reason (argparse would say "invalid parse value")."""
    skipped = set(skip)
    groups = {name: parser.add_argument_group(name, description) for name, description in GROUPS.items()}
    for setting in SETTINGS:
        if setting.name in skipped:
            continue
        group = groups[group_of(setting)]
        if setting.cli and setting.type is bool:
            group.add_argument(*setting.cli, dest=setting.name, action="store_true", default=None, help=_help(setting))
        elif setting.cli:
            group.add_argument(
                *setting.cli,
                dest=setting.name,
                type=_parser(setting),
                choices=_choices(setting),
                help=_help(setting),
            )
        for flag, value in setting.flag_values.items():
            group.add_argument(
                flag, dest=setting.name, action="store_const", const=value, help=f"{setting.name}={value}"
            )


def _choices(setting: Setting) -> list[str] | None:
    """The table's choices; isolation's are the modes registered by the time the parser is built (plug-ins)."""
    if setting.name == "isolation":
        return isolation_modes()
    return list(setting.choices) or None


def _help(setting: Setting) -> str:
    """The table's help; its default once (unless the help says it, or there is none), and its variable."""
    shown = setting.help
    if "default" not in shown and setting.default not in (None, False, ""):
        shown += f" (default: {setting.default!r})"
    return shown + (f" [${setting.env}]" if setting.env else "")


def _parser(setting: Setting) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.name
    return parse


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (the rest are left to the environment and the defaults)."""
    return {s.name: getattr(args, s.name) for s in SETTINGS if getattr(args, s.name, None) is not None}
