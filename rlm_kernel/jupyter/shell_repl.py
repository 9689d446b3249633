"""Depth 0 in a notebook: model code runs in the kernel shell's own namespace."""

from __future__ import annotations

from typing import Any

from rlm_kernel.core.repl import ExecResult, NamespaceREPL

_MISSING = object()


class ShellREPL(NamespaceREPL):
    """Runs model code in `shell.user_ns`, so every variable it makes is there afterwards.

    Code goes through the shell's input transformers first, so `%magics` and `!commands`
    behave as in a cell. The engine's reserved names (context, llm_query, FINAL...)
    are set for the run and put back as they were by `restore()`.
    """

    def __init__(self, shell: Any, *, cell_timeout: float | None = None, max_output_chars: int = 10_000) -> None:
        super().__init__(shell.user_ns, cell_timeout=cell_timeout, max_output_chars=max_output_chars)
        self.shell = shell
        self._saved: dict[str, object] = {}
        self._users = dict(shell.user_ns)  # the user's variables as the run found them (references, no copies)

    def set(self, name: str, value: object) -> None:
        if name not in self._saved:
            self._saved[name] = self.namespace.get(name, _MISSING)
        self.namespace[name] = value

    def names(self) -> list[str]:
        hidden = self.shell.user_ns_hidden
        return [n for n in self.namespace if n not in hidden and not n.startswith("_")]

    def execute(self, code: str, timeout: float | None = None) -> ExecResult:
        return super().execute(self.shell.transform_cell(code), timeout)

    def replaced(self) -> dict[str, object]:
        """The user's variables that model code rebound or deleted, with the values they had before the run."""
        hidden = self.shell.user_ns_hidden
        return {
            name: value
            for name, value in self._users.items()
            if not name.startswith("_")
            and name not in hidden
            and name not in self._saved
            and self.namespace.get(name, _MISSING) is not value
        }

    def restore(self) -> None:
        for name, value in self._saved.items():
            if value is _MISSING:
                self.namespace.pop(name, None)
            else:
                self.namespace[name] = value
        self._saved.clear()
