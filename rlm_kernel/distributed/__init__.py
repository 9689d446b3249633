"""Batches on a Ray cluster: `RLM.batch(questions, executor="ray")`, or `executor=RayExecutor(...)` for options.

Importing this imports Ray (the `ray` extra); the package root registers the name "ray" and imports this only when
a batch asks for it, so without Ray installed nothing imports it.
"""

from __future__ import annotations

from rlm_kernel.distributed.events import Progress
from rlm_kernel.distributed.executor import RayExecutor

__all__ = ["Progress", "RayExecutor"]
