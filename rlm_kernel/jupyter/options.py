"""The magics' settings, generated from core's settings table: traitlets, per-cell options, `%rlm config` rows."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from IPython.core.error import UsageError
from traitlets import Bool, Dict, Enum, Float, Int, TraitType, Unicode
from traitlets.config import Configurable

from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.setting import Setting
from rlm_kernel.core.settings import SETTINGS, source

_TRAITS: dict[type, type[TraitType[Any, Any]]] = {int: Int, float: Float, str: Unicode, bool: Bool, dict: Dict}


def _trait(setting: Setting) -> TraitType[Any, Any]:
    allow_none = setting.optional
    if setting.choices:
        choices = list(setting.choices)
        if allow_none:  # two calls: Enum's overloads take allow_none as a literal
            return Enum(choices, setting.default, allow_none=True, help=setting.help).tag(config=True)
        return Enum(choices, setting.default, allow_none=False, help=setting.help).tag(config=True)
    trait = _TRAITS[setting.type](setting.default, allow_none=allow_none, help=setting.help)
    return trait.tag(config=True)


# Every setting as a traitlet (`%config RLMMagics.max_depth = 2`), declared by the table alone.
SettingTraits: type[Configurable] = type(
    "SettingTraits",
    (Configurable,),
    {"__doc__": "The run settings as traitlets.", **{s.name: _trait(s) for s in SETTINGS}},
)


class _CellParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"%%rlm: {message}")


NEW_SESSION_HELP = "start a new session: the model is not told of this notebook's earlier questions"
QUESTION_FROM_HELP = "a notebook string that holds the question (a papermill parameter), in place of the cell body"
ANSWER_FORMATS = ("text", "markdown")
FORMAT_HELP = "how a text answer shows: text, as written (the default), or markdown, rendered"
# Options that name notebook objects, so only a cell has them (the --instructions setting takes the text itself).
CELL_ONLY = (
    ("--tools", "notebook functions the model may call, comma-separated: --tools search,lookup"),
    ("--answer-type", "a notebook type the answer must fit (int, a dataclass, a pydantic model...)"),
    ("--instructions", "a notebook string of domain guidance for the system prompt"),
)


def _value_of(setting: Setting) -> Any:
    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = setting.type.__name__  # argparse names the type in its error message
    return parse


def cell_parser() -> argparse.ArgumentParser:
    """The per-cell options of `%%rlm`: the table's magic flags, plus what only a cell has."""
    parser = _CellParser(prog="%%rlm", add_help=False)
    parser.add_argument("--context", "-c", help="notebook variable holding the context (default: from %%rlm load)")
    parser.add_argument("--out", help="also store the answer in this variable")
    parser.add_argument("--new", action="store_true", help=NEW_SESSION_HELP)
    parser.add_argument("--question-from", help=QUESTION_FROM_HELP)
    parser.add_argument("--format", choices=ANSWER_FORMATS, default="text", help=FORMAT_HELP)
    for flag, help_ in CELL_ONLY:
        parser.add_argument(flag, help=help_)
    for setting in SETTINGS:
        if setting.magic:
            if setting.type is bool:
                parser.add_argument(*setting.magic, dest=setting.name, action="store_true", default=None)
            else:
                parser.add_argument(*setting.magic, dest=setting.name, type=_value_of(setting), help=setting.help)
        for flag, value in setting.flag_values.items():
            parser.add_argument(flag, dest=setting.name, action="store_const", const=value)
    return parser


def options_help() -> str:
    """The per-cell options, for the magic's docstring."""
    lines = ["", "Options of a %%rlm cell (each also a setting: %config RLMMagics.<name> = ...):"]
    lines.append("  --context NAME, -c NAME    the notebook variable holding the context")
    lines.append("  --out NAME                 also store the answer in this variable")
    lines.append(f"  {'--new':<27}{NEW_SESSION_HELP}")
    lines.append(f"  {'--question-from NAME':<27}{QUESTION_FROM_HELP}")
    lines.append(f"  {'--format text|markdown':<27}{FORMAT_HELP}")
    lines.extend(f"  {flag + ' NAME':<27}{help_}" for flag, help_ in CELL_ONLY)
    for setting in SETTINGS:
        flags = [*setting.magic, *setting.flag_values]
        if flags:
            lines.append(f"  {', '.join(flags):<27}{setting.name}: {setting.help}")
    return "\n".join(lines)


def configured(magics: Configurable) -> dict[str, Any]:
    """The settings set with %config or a profile (the rest are left to the engine: environment, default)."""
    section = magics.config.get(type(magics).__name__, {})
    return {s.name: getattr(magics, s.name) for s in SETTINGS if s.name in section}


def config_rows(given: Mapping[str, Any], effective: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(setting, value as shown, where it comes from) for `%rlm config`; secrets only say whether they are set."""
    rows = []
    for setting in SETTINGS:
        where = source(setting.name, given)
        where = "%config / profile" if where == "given" else where
        value = effective.get(setting.name)
        shown = ("set" if value else "not set") if setting.secret else str(value)
        rows.append((setting.name, shown, where))
    return rows
