"""A cap on the tasks (processes and threads) of one isolated worker, so that model code starting threads cannot
take the host's pid space (threads are allowed: the seccomp filter refuses only new processes).

The worker is moved into a pids cgroup of its own, made under the caller's (cgroup v1's pids hierarchy, or v2
where the caller's cgroup delegates the pids controller), with `pids.max = MAX_TASKS`; a thread past the cap
fails to start (RuntimeError: can't start new thread). Where no such cgroup can be made (no write access to the
cgroup tree), `TaskCap.path` is None and the worker's RLIMIT_NPROC (MAX_TASKS, set by the worker itself) is the
cap: the kernel counts it per user and per user namespace, so in the sandbox's own namespace it counts the
worker's tasks alone and cannot starve the caller's other processes. It does not bind a caller that is root on
the host (the kernel exempts host root), who can make the cgroup; RLIMIT_AS bounds the threads either way.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

MAX_TASKS = 256  # threads and processes of one worker
_CGROUP_FS = Path("/sys/fs/cgroup")


def _candidates() -> list[Path]:
    """Where a child pids cgroup of this process's own can be made: v1's pids hierarchy, then v2's."""
    found = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "pids" in controllers.split(","):
                found.append(_CGROUP_FS / "pids" / path.lstrip("/"))
            elif controllers == "":
                found.append(_CGROUP_FS / path.lstrip("/"))
    return found


class TaskCap:
    """`pid` (a process and every thread it starts later) capped at `max_tasks` tasks, while this object lives."""

    def __init__(self, pid: int, max_tasks: int = MAX_TASKS) -> None:
        self.path: Path | None = None
        for parent in _candidates():
            group = parent / f"rlm-worker-{pid}"
            try:
                group.mkdir()
            except OSError:
                continue
            try:
                (group / "pids.max").write_text(str(max_tasks))
                (group / "cgroup.procs").write_text(str(pid))
            except OSError:
                with contextlib.suppress(OSError):
                    group.rmdir()
                continue
            self.path = group
            return

    def close(self) -> None:
        """Remove the cgroup once the worker has exited (a cgroup with tasks left cannot be removed)."""
        if self.path is None:
            return
        for _ in range(100):  # a killed worker leaves its cgroup as it exits, a moment after the kill
            try:
                self.path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.01)
        self.path = None
