"""The operating system's side of isolation: the worker process, in a bubblewrap sandbox or (weaker) without.

`isolation="kernel"` starts the worker under bwrap with new user, PID, mount, network, IPC, UTS and cgroup
namespaces; the only files it sees are the Python installation (read-only), rlm_kernel itself (read-only),
its own /proc and a minimal, read-only /dev (so /dev/shm too), a private tmpfs at /tmp (its only writable
place, capped at the file-size limit) and the run's private directory holding the bridge socket (read-only). The environment is cleared;
there is no network (the bridge is a Unix socket). The worker then applies its rlimits and seccomp filter to
itself. Where bwrap or user namespaces are missing, `require_sandbox()` fails in one line that says what to
install; nothing falls back to a weaker mode on its own.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

from rlm_kernel.core.errors import ConfigError
from rlm_kernel.isolation import seccomp

SANDBOX_BRIDGE_DIR = "/run/rlm"  # where the run's private directory appears inside the sandbox
SANDBOX_HOME = "/tmp"
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)  # rlm_kernel/
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from rlm_kernel.isolation.worker import main; main(sys.argv[2])"
_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    # Fewer malloc arenas and BLAS threads keep the address space (what RLIMIT_AS counts) small.
    "MALLOC_ARENA_MAX": "2",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap), "
    "or choose isolation='kernel-audit', a weaker mode that runs without it"
)


class SandboxUnavailable(ConfigError):
    """isolation='kernel' cannot start its sandbox here; the message says what to install or allow."""


def require_sandbox() -> None:
    """Raise SandboxUnavailable (one line) unless a bwrap sandbox can start on this machine."""
    problem = _sandbox_problem(shutil.which("bwrap"))
    if problem:
        raise SandboxUnavailable(problem)


@functools.lru_cache(maxsize=4)
def _sandbox_problem(bwrap: str | None) -> str | None:
    if sys.platform != "linux":
        return (
            f"isolation='kernel' needs Linux namespaces and bubblewrap, which {sys.platform} does not have; "
            "isolation='kernel-audit' is a weaker mode without them"
        )
    if bwrap is None:
        return f"isolation='kernel' needs bubblewrap (bwrap), which is not installed: {_INSTALL_HINT}"
    probe = [*bwrap_command(bwrap, None, 64 * 1024**2), sys.executable, "-I", "-c", "pass"]
    try:
        done = subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"isolation='kernel' could not run bwrap ({exc}): {_INSTALL_HINT}"
    if done.returncode != 0:
        said = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return (
            f"isolation='kernel' cannot start its sandbox (bwrap: {said}); it needs user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0, or a container that allows them)"
        )
    return None


def _python_dirs() -> list[str]:
    """The read-only view the worker needs: the interpreter's prefixes and installed packages, and rlm_kernel."""
    wanted = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, _PACKAGE_DIR}
    wanted.update(sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib"))
    found = sorted(str(Path(p).resolve()) for p in wanted if p and os.path.isdir(p))
    found += [p for p in sorted(wanted) if p and os.path.isdir(p) and p not in found]  # symlinked paths as named
    # A directory inside another bound one needs no bind of its own (and /usr is bound whole).
    return [p for p in found if not any(p != q and p.startswith(q + os.sep) for q in [*found, "/usr"])]


def bwrap_command(bwrap: str, bridge_dir: Path | None, tmpfs_bytes: int) -> list[str]:
    command = [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--hostname",
        "rlm-sandbox",
        "--clearenv",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top = Path("/", name)
        if top.is_symlink():
            command += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            command += ["--ro-bind", str(top), str(top)]
    for file in ("/etc/ld.so.cache", "/etc/localtime"):
        command += ["--ro-bind-try", file, file]
    # The private tmpfs first: what is bound after it stays visible even inside it (a venv or a checkout
    # under /tmp, as CI has), and everything else of /tmp stays hidden.
    # /dev is a tmpfs with no size (bwrap's --size is for --tmpfs only), and it and /dev/shm in it held host
    # memory no rlimit counts: read-only, the device nodes in it still work.
    command += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
    command += ["--size", str(tmpfs_bytes), "--tmpfs", SANDBOX_HOME]
    for directory in _python_dirs():
        command += ["--ro-bind", directory, directory]
    if bridge_dir is not None:
        command += ["--ro-bind", str(bridge_dir), SANDBOX_BRIDGE_DIR]
    command += ["--remount-ro", "/", "--chdir", SANDBOX_HOME]
    for key, value in {**_ENV, "HOME": SANDBOX_HOME, "TMPDIR": SANDBOX_HOME}.items():
        command += ["--setenv", key, value]
    return [*command, "--"]


def start_worker(
    *, sandboxed: bool, bridge_dir: Path, workdir: Path, tmpfs_bytes: int, channel_fd: int
) -> subprocess.Popen[bytes]:
    """Start the worker: under bwrap, or (kernel-audit) as a plain child with a scrubbed environment."""
    worker = [sys.executable, "-I", "-c", _BOOT, str(Path(_PACKAGE_DIR).parent), str(channel_fd)]
    if sandboxed:
        bwrap = shutil.which("bwrap")
        assert bwrap is not None  # require_sandbox() ran first
        command, env, cwd = [*bwrap_command(bwrap, bridge_dir, tmpfs_bytes), *worker], {}, None
    else:
        home = str(workdir)
        command, env, cwd = worker, {**_ENV, "HOME": home, "TMPDIR": home}, home
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        pass_fds=(channel_fd,),
        start_new_session=True,  # no controlling terminal; the caller's Ctrl-C does not reach it directly
    )


def worker_pid(process: subprocess.Popen[bytes], *, sandboxed: bool) -> int | None:
    """The host pid of the Python worker: bwrap's grandchild (bwrap, then its init in the new PID namespace)."""
    if not sandboxed:
        return process.pid
    pid = process.pid
    for _ in range(2):
        children = _children(pid)
        if len(children) != 1:
            return None
        pid = children[0]
    return pid


def _children(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def kill(process: subprocess.Popen[bytes], pid: int | None) -> None:
    """SIGKILL the worker and bwrap (the sandbox's PID namespace dies with its init), and reap bwrap."""
    for target in (pid, process.pid):
        if target is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def seccomp_supported() -> bool:
    return seccomp.supported()
