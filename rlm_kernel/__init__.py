"""rlm_kernel: Recursive Language Models in the Jupyter notebook.

`%load_ext rlm_kernel` registers the %rlm / %%rlm magics in any IPython kernel.
"""

from __future__ import annotations

from typing import Any

from rlm_kernel.core import RLM, RLMResult

__version__ = "0.1.0"
__all__ = ["RLM", "RLMResult", "__version__", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    from rlm_kernel.jupyter.magics import RLMMagics, protect_line_questions

    ipython.register_magics(RLMMagics)
    if protect_line_questions not in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.append(protect_line_questions)


def unload_ipython_extension(ipython: Any) -> None:
    from rlm_kernel.jupyter.magics import RLMMagics, protect_line_questions

    if protect_line_questions in ipython.input_transformers_cleanup:
        ipython.input_transformers_cleanup.remove(protect_line_questions)

    manager = ipython.magics_manager
    for kind in ("line", "cell"):
        for name in RLMMagics.magics[kind]:
            manager.magics[kind].pop(name, None)
    instance = manager.registry.pop(RLMMagics.__name__, None)
    if instance in ipython.configurables:
        ipython.configurables.remove(instance)
