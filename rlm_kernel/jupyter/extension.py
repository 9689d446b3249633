"""Loading and unloading the extension (`%load_ext rlm_kernel`)."""

from __future__ import annotations

from typing import Any, cast

from rlm_kernel.jupyter.magics import RLMMagics, protect_line_questions


def load(ipython: Any) -> None:
    ipython.register_magics(RLMMagics)
    magics = ipython.magics_manager.registry[RLMMagics.__name__]
    if magics not in ipython.configurables:  # so that %config RLMMagics lists and sets the settings
        ipython.configurables.append(magics)
    if protect_line_questions not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(protect_line_questions)


def unload(ipython: Any) -> None:
    if protect_line_questions in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.remove(protect_line_questions)
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        for name in cast("dict[str, dict[str, Any]]", RLMMagics.magics)[kind]:  # @magics_class filled it
            manager.magics[kind].pop(name, None)
    instance = manager.registry.pop(RLMMagics.__name__, None)
    while instance in ipython.configurables:
        ipython.configurables.remove(instance)
