"""Loading and unloading the extension (`%load_ext rlm_kernel`)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, cast

from rlm_kernel.core.batch import BatchWatcher, register_batch_view
from rlm_kernel.core.result import RLMResult
from rlm_kernel.jupyter.magics import RLMMagics, protect_line_questions

# Where an unloaded extension leaves the session's runs and default context, for the next load to pick up.
_KEPT = "_rlm_kernel_session"


def load(ipython: Any) -> None:
    """Register the magics; a reload (or a second load) keeps the session's runs, default context and aliases."""
    previous = ipython.magics_manager.registry.get(RLMMagics.__name__)
    kept = (
        (previous.runs, previous.default_context, previous.aliases)
        if previous is not None
        else getattr(ipython, _KEPT, None)
    )
    if previous is not None:
        _forget(ipython, previous)
    ipython.register_magics(RLMMagics)
    magics = ipython.magics_manager.registry[RLMMagics.__name__]
    if kept is not None:
        magics.runs, magics.default_context, magics.aliases = kept
    if magics not in ipython.configurables:  # so that %config RLMMagics lists and sets the settings
        ipython.configurables.append(magics)
    if protect_line_questions not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(protect_line_questions)
    register_batch_view(functools.partial(_batch_view, magics))


def _batch_view(magics: RLMMagics, queries: list[str], kept: Mapping[int, RLMResult]) -> BatchWatcher | None:
    """`RLM.batch`'s live view in this kernel's frontend, unless `%config RLMMagics.batch_view = False` (ipywidgets
    imported only when a batch starts)."""
    if not magics.batch_view:
        return None
    from rlm_kernel.jupyter.batch_view import show_batch_view

    return show_batch_view(queries, kept)


def unload(ipython: Any) -> None:
    register_batch_view(None)
    if protect_line_questions in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.remove(protect_line_questions)
    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        for name in cast("dict[str, dict[str, Any]]", RLMMagics.magics)[kind]:  # @magics_class filled it
            manager.magics[kind].pop(name, None)
    instance = manager.registry.pop(RLMMagics.__name__, None)
    if instance is not None:
        setattr(ipython, _KEPT, (instance.runs, instance.default_context, instance.aliases))
        _forget(ipython, instance)


def _forget(ipython: Any, instance: Any) -> None:
    while instance in ipython.configurables:
        ipython.configurables.remove(instance)
