"""rlm_kernel: Recursive Language Models in the Jupyter notebook.

`%load_ext rlm_kernel` registers the %rlm / %%rlm magics in any IPython kernel.

This module is also where the package plugs into its core: core names the places where
plug-ins go (litellm providers, isolated REPLs, the notebook writer, the file loaders, telemetry) and imports
nothing outside itself; the plug-ins are registered here, and each is imported only when first used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlm_kernel.core import RLM, RLMResult
from rlm_kernel.core.batch import register_executor
from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.lm import on_litellm_import
from rlm_kernel.core.loaders import register_file_loaders
from rlm_kernel.core.repl import REPL, register_isolation
from rlm_kernel.core.result import EarlierTurn, register_notebook_writer
from rlm_kernel.core.telemetry import Telemetry, register_telemetry
from rlm_kernel.core.trace import Trace

__version__ = "0.1.0"
__all__ = ["RLM", "RLMResult", "__version__", "load_ipython_extension", "unload_ipython_extension"]


def _register_offline_providers(litellm: Any) -> None:
    from rlm_kernel.models.scripted import register

    register(litellm)


def _isolated(mode: str) -> Callable[[], Callable[..., REPL]]:
    def load() -> Callable[..., REPL]:
        from rlm_kernel.isolation import repl_factory

        return repl_factory(mode)

    return load


def _file_loaders() -> Any:
    import rlm_kernel.loaders

    return rlm_kernel.loaders


def _write_notebook(
    trace: Trace, path: str | Path, *, context: object, with_context: bool | None, earlier: Sequence[EarlierTurn]
) -> Any:
    from rlm_kernel.formats.notebook import write_notebook

    return write_notebook(trace, path, context=context, with_context=with_context, earlier=earlier)


def _otel() -> Telemetry:
    from rlm_kernel.telemetry import default_telemetry  # imports opentelemetry: only when a run asks for it

    return default_telemetry()


def _ray_executor() -> Any:
    try:
        from rlm_kernel.distributed import RayExecutor
    except ImportError as missing:
        if missing.name != "ray" and not str(missing.name).startswith("ray."):
            raise
        raise ConfigError("executor='ray' needs Ray: pip install 'rlm_kernel[ray]'") from None
    return RayExecutor()


on_litellm_import(_register_offline_providers)
register_executor("ray", _ray_executor)
register_isolation("kernel", _isolated("kernel"))
register_isolation("kernel-audit", _isolated("kernel-audit"))
register_notebook_writer(_write_notebook)
register_telemetry("otel", _otel, env="OTEL_EXPORTER_OTLP_ENDPOINT")
register_file_loaders(_file_loaders)


def load_ipython_extension(ipython: Any) -> None:
    from rlm_kernel.jupyter.extension import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from rlm_kernel.jupyter.extension import unload

    unload(ipython)
