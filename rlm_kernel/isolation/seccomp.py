"""A small seccomp filter for the isolated worker: no new processes, no kernel features a sandbox never needs.

Installed by the worker on itself before any model code runs (a filter cannot be removed). Threads are
allowed (clone with CLONE_THREAD); fork, vfork, exec and clone without CLONE_THREAD fail with EPERM, so
os.fork, subprocess, _posixsubprocess.fork_exec and libc's system() through ctypes all fail; so does
os.memfd_create. clone3 answers
ENOSYS, which makes glibc fall back to clone, whose flags the filter can read. Only x86_64 has the table;
elsewhere the worker runs without it (the namespaces still hold) and says so in `installed()`.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_CLONE_THREAD = 0x00010000
_CLONE, _CLONE3 = 56, 435
# x86_64 numbers: fork vfork execve execveat ptrace process_vm_readv/writev mount umount2 pivot_root unshare
# setns add_key request_key keyctl bpf perf_event_open userfaultfd kexec_load kexec_file_load init_module
# finit_module delete_module name_to_handle_at open_by_handle_at io_uring_setup/enter/register; memfd_create and
# memfd_secret (a memfd is host memory that neither RLIMIT_AS nor the tmpfs's size counts)
_DENIED_X86_64: tuple[int, ...] = (57, 58, 59, 322, 101, 310, 311, 165, 166, 155, 272, 308, 248, 249, 250, 321)
_DENIED_X86_64 += (298, 323, 246, 320, 175, 313, 176, 303, 304, 425, 426, 427, 319, 447)

_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (arg 0's low word, little-endian)
_PR_SET_NO_NEW_PRIVS, _SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER = 38, 317, 1


def supported() -> bool:
    return platform.system() == "Linux" and platform.machine() == "x86_64"


def _program() -> list[tuple[int, int, int, int]]:
    allow, eperm, enosys = "allow", "eperm", "enosys"
    code: list[tuple[int, object, object, int]] = [
        (_LD_W_ABS, 0, 0, _ARCH),
        (_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),  # another ABI (i386, through int 0x80) has other numbers
        (_LD_W_ABS, 0, 0, _NR),
        (_JGE_K, eperm, 0, _X32_SYSCALL_BIT),
        *((_JEQ_K, eperm, 0, nr) for nr in _DENIED_X86_64),
        (_JEQ_K, enosys, 0, _CLONE3),
        (_JEQ_K, 0, allow, _CLONE),
        (_LD_W_ABS, 0, 0, _ARG0),
        (_JSET_K, allow, eperm, _CLONE_THREAD),
    ]
    targets = {allow: len(code), eperm: len(code) + 1, enosys: len(code) + 2}
    code += [
        (_RET_K, 0, 0, _RET_ALLOW),
        (_RET_K, 0, 0, _RET_ERRNO | errno.EPERM),
        (_RET_K, 0, 0, _RET_ERRNO | errno.ENOSYS),
    ]

    def offset(at: int, jump: object) -> int:
        return jump if isinstance(jump, int) else targets[str(jump)] - at - 1

    return [(op, offset(i, jt), offset(i, jf), k) for i, (op, jt, jf, k) in enumerate(code)]


def install() -> None:
    """Apply the filter to this process (and threads it starts later). Raises OSError if the kernel refuses."""
    program = b"".join(struct.pack("=HBBI", *instruction) for instruction in _program())
    buffer = ctypes.create_string_buffer(program)

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    libc = ctypes.CDLL(None, use_errno=True)
    prog = Program(len(program) // 8, ctypes.addressof(buffer))
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.syscall(_SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(prog)) != 0:
        raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER) failed")
