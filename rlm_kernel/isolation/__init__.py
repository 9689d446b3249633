"""Isolated execution: model code runs in a separate, limited worker process.

`isolation="kernel"` (`KernelREPL`) runs the worker in an operating-system sandbox (bubblewrap): new user,
PID, mount, network, IPC and UTS namespaces, a read-only view of the Python installation under neutral
names (no /proc: nothing it reads names the host's folders), a private tmpfs as its only writable place, a
cleared environment, no network; inside it, rlimits (memory,
CPU seconds, file size) and a seccomp filter (no new processes). The caller's functions are reached over a
bounded bridge on a Unix socket in a private per-run directory; nothing another run could use lies in a
shared directory. Where bubblewrap or user namespaces are missing it fails up front in one line.

`isolation="kernel-audit"` (`AuditKernelREPL`) is a weaker, separately named mode for such machines: the
same worker and limits without the namespaces, fenced by an audit hook inside the worker. The README's
isolation section lists, escape attempt by escape attempt, what each mode stops.

Modules: `sandbox` (bwrap and the worker process), `seccomp`, `worker` (the worker's side), `process` (the
caller's handle on a worker), `bridge`, `encoding` (frames and values), `audit` (the kernel-audit guard),
`worker_repl` (KernelREPL, the REPL protocol over a worker; not a Jupyter kernel).
"""

from __future__ import annotations

from collections.abc import Callable

from rlm_kernel.core.errors import ConfigError
from rlm_kernel.isolation.sandbox import SandboxUnavailable, require_sandbox
from rlm_kernel.isolation.worker_repl import AuditKernelREPL, GiB, KernelREPL, MiB

MODES = ("kernel", "kernel-audit")

__all__ = [
    "MODES",
    "AuditKernelREPL",
    "GiB",
    "KernelREPL",
    "MiB",
    "SandboxUnavailable",
    "repl_factory",
    "require_sandbox",
]


def repl_factory(mode: str) -> Callable[..., KernelREPL]:
    """The REPL class for an isolation mode; "kernel" checks here, up front, that its sandbox can start."""
    if mode == "kernel":
        require_sandbox()
        return KernelREPL
    if mode == "kernel-audit":
        return AuditKernelREPL
    raise ConfigError(f"isolation must be one of {', '.join(map(repr, MODES))}, not {mode!r}")
