"""The audit-hook guard of `isolation="kernel-audit"`, a weaker mode for machines without bubblewrap.

An audit hook sees Python-level calls only, and it runs inside the process it guards, so it is a fence
against accidents, not a sandbox: the README's isolation section lists what gets past it (reading the
caller's /proc, the network, writes through tricks that raise no audit event). The seccomp filter (where
installed) still stops new processes at the system-call level in this mode.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_PATH_EVENTS: dict[str, tuple[int, ...]] = {  # event -> positions of path arguments that must stay inside
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.rename": (0, 1),
    "os.link": (0, 1),
    "os.symlink": (1,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.chflags": (0,),
    "os.truncate": (0,),
    "os.utime": (0,),
    "os.setxattr": (0,),
    "os.removexattr": (0,),
    "shutil.rmtree": (0,),
    "shutil.chown": (0,),
    "shutil.copyfile": (1,),
    "shutil.copymode": (1,),
    "shutil.copystat": (1,),
    "shutil.copytree": (1,),
    "shutil.move": (0, 1),
    "shutil.make_archive": (0,),
    "shutil.unpack_archive": (1,),
    "sqlite3.connect": (0,),
}
_PROCESS_EVENTS = frozenset(
    {
        "os.fork",
        "os.forkpty",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.startfile",
        "subprocess.Popen",
    }
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def install_guard(workdir: str) -> None:
    """Install the audit hook; from here on, code in this process cannot remove it."""
    root = os.path.realpath(workdir)
    own_pid, own_group = os.getpid(), os.getpgid(0)

    def inside(path: object) -> bool:
        if isinstance(path, int):  # a file descriptor: the file it names
            try:
                path = os.readlink(f"/proc/self/fd/{path}")
            except OSError:
                return False
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False
        text = os.fsdecode(os.fspath(path))
        if text in (os.devnull, "", ":memory:"):
            return True
        if text.startswith("file:"):  # an sqlite URI
            return False
        real = os.path.realpath(text)  # follows symlinks: a link inside pointing out is outside
        return real == root or real.startswith(root + os.sep)

    def deny(what: str, rule: str = f"it may only write inside its working directory {root}") -> None:
        raise PermissionError(f"isolated kernel: {what} is not allowed; {rule}")

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):  # wrapping a descriptor opened earlier (and checked then)
                return
            writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
            if (writes or (mode is None and os.path.isdir(path))) and not inside(path):
                deny(
                    f"opening {os.fsdecode(os.fspath(path))!r} for writing" if writes else f"opening directory {path!r}"
                )
        elif event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if i < len(args) and not inside(args[i]):
                    deny(f"{event} on {args[i]!r}")
        elif event in _PROCESS_EVENTS:
            deny(f"starting a process ({event})", "use threads, or do the work in Python")
        elif event == "os.kill" and args[0] not in (own_pid, 0):
            deny(f"signalling process {args[0]}", "it may only signal itself")
        elif event == "os.killpg" and args[0] != own_group:
            deny(f"signalling process group {args[0]}", "it may only signal itself")
        elif event in ("ctypes.dlopen", "ctypes.dlsym/handle") or (
            event == "ctypes.dlsym" and not str(args[-1]).lstrip("_").startswith("Py")
        ):
            deny(f"reaching C functions through ctypes ({event})", "ctypes could get around these checks")

    sys.addaudithook(hook)
