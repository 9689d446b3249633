"""Where the file loaders plug into core: they live in `rlm_kernel.loaders`, which core may not import; the
package root registers them here, so `rlm_kernel.core.loaders.load_context` keeps working."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_loaders: list[Callable[[], Any]] = []  # gives the loaders' module when first used


def register_file_loaders(load: Callable[[], Any]) -> None:
    _loaders[:] = [load]


def _module() -> Any:
    return _loaders[0]()


def load_context(path_or_glob: str, **options: Any) -> object:
    """`rlm_kernel.loaders.load_context`."""
    return _module().load_context(path_or_glob, **options)


def load_files(path_or_glob: str, **options: Any) -> Any:
    """`rlm_kernel.loaders.load_files`."""
    return _module().load_files(path_or_glob, **options)


def describe_skipped(skipped: list[tuple[str, str]], shown: int = 10) -> str:
    """`rlm_kernel.loaders.describe_skipped`."""
    text: str = _module().describe_skipped(skipped, shown)
    return text
