"""The architecture as tests: the import rule (every import, inside functions too), no cycles, one settings
table behind every surface, one error tree."""

from __future__ import annotations

import ast
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import rlm_kernel
from rlm_kernel import RLM
from rlm_kernel.core import errors
from rlm_kernel.core.settings import SETTINGS

PACKAGE = Path(rlm_kernel.__file__).parent
JUPYTER = ("IPython", "ipykernel", "ipywidgets", "jupyter_client", "nbformat", "nbclient", "nbconvert", "traitlets")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside functions (TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import submodule` depends on the submodule (as import-linter reads it)
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & KNOWN
            found.update(submodules or {node.module})
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in ("__import__", "importlib.import_module"):
            if node.args and isinstance(node.args[0], ast.Constant):
                found.add(str(node.args[0].value))
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
KNOWN = set(MODULES)
IMPORTS = {name: imports_of(path) for name, path in MODULES.items()}
GRAPH = {name: {m for m in imported if m in MODULES and m != name} for name, imported in IMPORTS.items()}


def layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "root"


def test_core_imports_nothing_outside_core_nor_jupyter():
    for name, path in MODULES.items():
        if layer(name) != "core":
            continue
        for imported in imports_of(path):
            top = imported.split(".")[0]
            assert top not in JUPYTER, f"{name} imports {imported}"
            if top == "rlm_kernel":
                assert imported.startswith("rlm_kernel.core"), f"{name} imports {imported}"


def test_views_and_formats_know_nothing_of_litellm():
    for name, path in MODULES.items():
        if layer(name) in ("formats", "jupyter"):
            assert not any(m.split(".")[0] == "litellm" for m in imports_of(path)), f"{name} imports litellm"


def reachable(start: str) -> set[str]:
    """The project's modules `start` reaches through imports (at module level or inside functions)."""
    seen, stack = set(), [start]
    while stack:
        for nxt in GRAPH[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def test_no_import_cycles():
    cycles = sorted(name for name in GRAPH if name in reachable(name))
    assert not cycles, f"modules on an import cycle: {cycles}"


@pytest.mark.parametrize(("package", "allowed"), [("core", {"core"}), ("formats", {"core", "formats", "models"})])
def test_what_core_and_formats_reach_stays_in_their_layers_and_out_of_jupyter(package, allowed):
    """Not only direct imports: a module reached through another (or through a function's import) counts too."""
    for name in MODULES:
        if layer(name) != package:
            continue
        for reached in reachable(name) | {name}:
            assert layer(reached) in allowed, f"{name} reaches {reached}"
            jupyter = {m for m in IMPORTS[reached] if m.split(".")[0] in JUPYTER}
            assert not jupyter, f"{name} reaches {reached}, which imports {sorted(jupyter)}"


def test_models_never_reach_the_engine():
    # rlm_kernel.core itself: its __init__ imports the engine
    engine = {"rlm_kernel.core", "rlm_kernel.core.engine", "rlm_kernel.core.node", "rlm_kernel.core.tree"}
    for name in MODULES:
        if layer(name) == "models":
            assert not reachable(name) & engine, f"{name} reaches the engine"


def test_importing_formats_in_a_fresh_interpreter_loads_no_jupyter_package():
    formats = sorted(name for name in MODULES if layer(name) == "formats")
    code = (
        f"import importlib, sys\nfor name in {formats!r}:\n    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {JUPYTER!r}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_rlm_signature_matches_the_settings_table():
    params = inspect.signature(RLM.__init__).parameters
    extras = {"self", "on_event", "router", "lm", "repl_factory", "tools", "executor"}  # Python objects, not settings
    assert set(params) - extras == {s.name for s in SETTINGS}
    assert params["model"].default is inspect.Parameter.empty  # the one required argument (or $RLM_MODEL)
    for setting in SETTINGS[1:]:
        assert params[setting.name].default == setting.default, setting.name


def test_cli_and_magic_options_and_traitlets_come_from_the_table():
    from rlm_kernel.cli import main  # noqa: F401 - the parser is built inside main
    from rlm_kernel.jupyter.magics import RLMMagics
    from rlm_kernel.jupyter.options import cell_parser

    traits = RLMMagics.class_traits(config=True)
    for setting in SETTINGS:
        assert traits[setting.name].help == setting.help
        assert traits[setting.name].default_value == setting.default or setting.default is None
    dests = {a.dest for a in cell_parser()._actions}
    assert {s.name for s in SETTINGS if s.magic} <= dests


def test_rlm_run_has_an_option_for_every_setting(capsys):
    from rlm_kernel.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for setting in SETTINGS:
        flags = [*setting.cli, *setting.flag_values]  # a setting may be only a fixed-value flag: --no-sub-calls
        assert flags and all(flag in text for flag in flags), setting.name


def test_every_project_error_derives_from_rlm_error():
    # Stops, not errors; and ReplayedError, which raises a recorded error of model code again, as that error.
    control_flow = {"RunInterrupted", "SubmitAnswer", "RunCancelled", "CellTimeout", "ReplayedError"}
    control_flow |= {"BatchInterrupted", "BatchCancelled"}  # a batch's stops, carrying its results
    control_flow.add("ReplayReached")  # a replay stopped where an inserted cell asked (formats/rerun.py)
    for name in MODULES:
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == name:
                assert value.__name__ in control_flow or issubclass(value, errors.RLMError), f"{name}.{value.__name__}"
    for name in ("ContextError", "ConfigError", "ExportError", "TraceError"):
        assert issubclass(getattr(errors, name), ValueError)
    assert issubclass(errors.ReplayError, LookupError) and issubclass(errors.PolicyError, LookupError)


def test_no_module_is_over_500_lines():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > 500}
    assert not long
