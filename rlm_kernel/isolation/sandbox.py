"""The operating system's side of isolation: the worker process, in a bubblewrap sandbox or (weaker) without.

`isolation="kernel"` starts the worker under bwrap with new user, PID, mount, network, IPC, UTS and cgroup
namespaces; the only files it sees are /usr, the Python installation and rlm_kernel itself (read-only, under
neutral names: /rlm/python, /rlm/venv, /rlm/lib), a minimal, read-only /dev (so /dev/shm too), a private
tmpfs at /tmp (its only writable place, capped at the file-size limit) and the run's private directory
holding the bridge socket (read-only, at /rlm/bridge). What Python tells it names none of the host's
folders: sys.path, sys.prefix, sys.executable, modules' __file__, the venv's pyvenv.cfg and the build variables
(both generated) all say /rlm/..., and there is no /proc, whose mount table would name every bound folder's host
path (a bind mount's source shows there whatever it is mounted as). The environment is cleared; there is no
network (the bridge is a Unix socket). The worker then applies its rlimits and seccomp filter to itself. Where
bwrap or user namespaces are missing, `require_sandbox()` fails in one line that says what to install; nothing
falls back to a weaker mode on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from rlm_kernel.core.errors import ConfigError
from rlm_kernel.isolation import seccomp

SANDBOX_BRIDGE_DIR = "/rlm/bridge"  # where the run's private directory appears inside the sandbox
SANDBOX_HOME = "/tmp"
# Where the Python installation appears inside: the base interpreter's prefix (unless it lies in /usr, which is
# bound as itself), the venv (its site-packages and a generated pyvenv.cfg) and rlm_kernel's parent folder.
_SANDBOX_BASE = "/rlm/python"
_SANDBOX_VENV = "/rlm/venv"
_SANDBOX_LIB = "/rlm/lib"
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
    try:
        with _sandboxed_python(bwrap, None, 64 * 1024**2, "-I", "-c", "pass") as (probe, fds):
            done = subprocess.run(probe, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, pass_fds=fds)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"isolation='kernel' could not run bwrap ({exc}): {_INSTALL_HINT}"
    if done.returncode != 0:
        said = (done.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        if not said.startswith("bwrap:"):  # the sandbox started; the Python installation did not run in it
            return (
                f"isolation='kernel' cannot run this Python inside its sandbox ({said}); "
                "isolation='kernel-audit' is a weaker mode that runs without it"
            )
        return (
            f"isolation='kernel' cannot start its sandbox (bwrap: {said}); it needs user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0, or a container that allows them)"
        )
    return None


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How this Python installation appears inside the sandbox."""

    binds: tuple[tuple[str, str], ...]  # (host folder, where it appears), read-only
    symlinks: tuple[tuple[str, str], ...]  # (target, link)
    python: str  # the interpreter to run, as named inside
    files: tuple[tuple[str, str], ...]  # (where it appears, text): files written anew with the inside names
    env: dict[str, str]


@functools.lru_cache(maxsize=1)
def _layout() -> _Layout:
    base = os.path.realpath(sys.base_prefix)
    interpreter = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    binds = [(_PACKAGE_DIR, f"{_SANDBOX_LIB}/rlm_kernel")]
    files = []
    env = {}
    if _under(interpreter, "/usr"):
        python = interpreter  # a system Python: /usr is bound as itself and names nothing of the user's
    else:
        binds.append((base, _SANDBOX_BASE))
        python = _inside(interpreter, base, _SANDBOX_BASE)
        libdir = sysconfig.get_config_var("LIBDIR")
        if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and _under(os.path.realpath(libdir), base):
            # The interpreter finds libpython through a run path that names the host's folder.
            env["LD_LIBRARY_PATH"] = _inside(os.path.realpath(libdir), base, _SANDBOX_BASE)
        # The build variables (sysconfig.get_config_vars()) name the prefix the interpreter was built for.
        for data in sorted(Path(os.path.realpath(sysconfig.get_path("stdlib"))).glob("_sysconfigdata_*.py")):
            text = data.read_text(encoding="utf-8")
            for host in {base, sys.base_prefix}:
                text = text.replace(host, _SANDBOX_BASE)
            files.append((_inside(str(data), base, _SANDBOX_BASE), text))
    if sys.prefix == sys.base_prefix:
        return _Layout(tuple(binds), (), python, tuple(files), env)
    venv = os.path.realpath(sys.prefix)
    for site in sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}):
        if os.path.isdir(site) and _under(os.path.realpath(site), venv):
            binds.append((os.path.realpath(site), _inside(site, sys.prefix, _SANDBOX_VENV)))
    config = f"home = {os.path.dirname(python)}\n"
    config += f"include-system-site-packages = {'true' if _system_site_packages() else 'false'}\n"
    config += f"version = {'.'.join(map(str, sys.version_info[:3]))}\n"
    files.append((f"{_SANDBOX_VENV}/pyvenv.cfg", config))
    return _Layout(
        tuple(binds), ((python, f"{_SANDBOX_VENV}/bin/python3"),), f"{_SANDBOX_VENV}/bin/python3", tuple(files), env
    )


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _inside(path: str, host_folder: str, sandbox_folder: str) -> str:
    return str(Path(sandbox_folder, os.path.relpath(path, host_folder)))


def _system_site_packages() -> bool:
    with contextlib.suppress(OSError):
        for line in Path(sys.prefix, "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip().lower() == "include-system-site-packages":
                return value.strip().lower() == "true"
    return False


@contextlib.contextmanager
def _sandboxed_python(
    bwrap: str, bridge_dir: Path | None, tmpfs_bytes: int, *args: str
) -> Iterator[tuple[list[str], tuple[int, ...]]]:
    """The command that runs the sandbox's Python with `args`, and the descriptors bwrap must be passed (a pipe
    per generated file, which bwrap copies in)."""
    layout = _layout()
    files: dict[str, int] = {}
    try:
        for target, text in layout.files:
            read, write = os.pipe()
            files[target] = read
            data = text.encode()
            if len(data) >= 65536:  # room for all of it, so that writing before bwrap reads cannot block
                import fcntl  # Linux, as the sandbox is

                fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, len(data))
            with open(write, "wb") as pipe:
                pipe.write(data)
        yield [*bwrap_command(bwrap, bridge_dir, tmpfs_bytes, files), layout.python, *args], tuple(files.values())
    finally:
        for read in files.values():
            os.close(read)


def bwrap_command(bwrap: str, bridge_dir: Path | None, tmpfs_bytes: int, files: dict[str, int]) -> list[str]:
    """bwrap's options; `files` maps where each generated file appears to the descriptor bwrap reads it from."""
    layout = _layout()
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
    command += ["--dev", "/dev", "--remount-ro", "/dev"]
    command += ["--size", str(tmpfs_bytes), "--tmpfs", SANDBOX_HOME]
    for source, target in layout.binds:
        command += ["--ro-bind", source, target]
    for target, link in layout.symlinks:
        command += ["--symlink", target, link]
    for target, fd in files.items():
        command += ["--ro-bind-data", str(fd), target]
    if bridge_dir is not None:
        command += ["--ro-bind", str(bridge_dir), SANDBOX_BRIDGE_DIR]
    command += ["--remount-ro", "/", "--chdir", SANDBOX_HOME]
    for key, value in {**_ENV, **layout.env, "HOME": SANDBOX_HOME, "TMPDIR": SANDBOX_HOME}.items():
        command += ["--setenv", key, value]
    return [*command, "--"]


def start_worker(
    *, sandboxed: bool, bridge_dir: Path, workdir: Path, tmpfs_bytes: int, channel_fd: int
) -> subprocess.Popen[bytes]:
    """Start the worker: under bwrap, or (kernel-audit) as a plain child with a scrubbed environment."""
    if not sandboxed:
        home = str(workdir)
        worker = [sys.executable, "-I", "-c", _BOOT, str(Path(_PACKAGE_DIR).parent), str(channel_fd)]
        return _popen(worker, {**_ENV, "HOME": home, "TMPDIR": home}, home, (channel_fd,))
    bwrap = shutil.which("bwrap")
    assert bwrap is not None  # require_sandbox() ran first
    with _sandboxed_python(bwrap, bridge_dir, tmpfs_bytes, "-I", "-c", _BOOT, _SANDBOX_LIB, str(channel_fd)) as (
        command,
        fds,
    ):
        return _popen(command, {}, None, (channel_fd, *fds))


def _popen(command: list[str], env: dict[str, str], cwd: str | None, fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        pass_fds=fds,
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
