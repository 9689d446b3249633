"""Attacks on the sandbox's limits: model code that fills the writable places a tmpfs backs (/dev, /dev/shm,
memfd files) holds host memory that no rlimit of the worker counts. The host's Shmem added by one isolated worker
must stay under memory_limit + file_size_limit + 64 MB whatever the code writes."""

from __future__ import annotations

import re
import sys
import textwrap

import pytest

from rlm_kernel.bench.safety import THREAD_FLOOD
from rlm_kernel.isolation import KernelREPL

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux namespaces"),
]
MiB = 1024 * 1024

FILL = """
import os
written = {}
def fill(path, total, chunk=b"x" * (1 << 20)):
    done = 0
    try:
        with open(path, "wb") as file:
            while done < total:
                file.write(chunk)
                done += len(chunk)
    except OSError:
        pass
    written[path] = done
for place in ("/dev/fill", "/dev/shm/fill"):
    fill(place, 96 << 20)
made = 0
for i in range(4):
    try:
        fd = os.memfd_create(f"m{i}")
    except OSError:
        break
    fill(f"/proc/self/fd/{fd}", 24 << 20)
    made += 1
print(sorted(written.items()), "memfds", made)
"""


def _shmem() -> int:
    with open("/proc/meminfo") as meminfo:
        fields = dict(line.split(":", 1) for line in meminfo)
    return int(fields["Shmem"].split()[0]) * 1024


def test_dev_dev_shm_and_memfd_writes_add_no_host_memory_past_the_limits():
    with KernelREPL(cell_timeout=60, memory_limit=256 * MiB, file_size_limit=32 * MiB) as kernel:
        before = _shmem()
        result = kernel.execute(textwrap.dedent(FILL))
        added = _shmem() - before
    assert result.error is None, result.error
    assert "('/dev/fill', 0)" in result.stdout and "('/dev/shm/fill', 0)" in result.stdout
    assert "memfds 0" in result.stdout
    assert added < 64 * MiB, f"the host's Shmem rose by {added / MiB:.0f} MiB"


FORGED_FRAME = """
import gc, socket, struct
for obj in gc.get_objects():
    if isinstance(obj, socket.socket) and obj.family == socket.AF_UNIX and obj.type == socket.SOCK_STREAM:
        try:
            obj.getpeername()
            obj.sendall(struct.pack("!Q", 200000) + b"[" * 200000)
        except OSError:
            pass
"""


def test_a_forged_deeply_nested_frame_on_the_workers_channel_is_a_protocol_error():
    with KernelREPL(cell_timeout=20) as kernel:
        result = kernel.execute(textwrap.dedent(FORGED_FRAME))  # must not raise RecursionError out of execute
        after = kernel.execute("print('still here')")
    assert "malformed reply" in (result.error or "")
    assert "still here" in after.stdout


def test_model_code_starts_no_more_threads_than_the_task_cap():
    from rlm_kernel.isolation.tasks import MAX_TASKS

    with KernelREPL(cell_timeout=60, memory_limit=256 * MiB) as kernel:
        if kernel._worker.tasks is None or kernel._worker.tasks.path is None:
            pytest.skip("no pids cgroup can be made here: the worker runs without a task cap (documented)")
        result = kernel.execute(textwrap.dedent(THREAD_FLOOD))
        group = kernel._worker.tasks.path
    started = int(result.stdout.split()[-1])
    assert started < MAX_TASKS, f"{started} threads started"
    assert not group.exists()  # the cgroup goes with its worker


def test_a_tool_hanging_across_the_bridge_leaves_no_caller_thread_after_the_run():
    import threading
    import time

    give_up = threading.Event()

    def spin(*args):
        while not give_up.is_set():  # pure Python: a stop can land here
            pass

    try:
        with KernelREPL(cell_timeout=1) as kernel:
            kernel.set("spin", spin)
            result = kernel.execute("spin()")
            assert "TimeoutError" in (result.error or "") or "restarted" in (result.error or "")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(t.name == "rlm-bridge-call" for t in threading.enumerate()):
            time.sleep(0.05)
        left = [t.name for t in threading.enumerate() if t.name == "rlm-bridge-call"]
    finally:
        give_up.set()
    assert left == []


EVERYWHERE = FILL.replace(
    'for place in ("/dev/fill", "/dev/shm/fill"):\n    fill(place, 96 << 20)',
    'for place in ("/dev/fill", "/dev/shm/fill", "/tmp/a", "/tmp/b", "/tmp/c"):\n    fill(place, 96 << 20)',
) + textwrap.dedent(
    """
    held = []
    try:
        while True:
            held.append(bytearray(16 << 20))  # touched: resident, not just reserved
    except MemoryError:
        pass
    print("anonymous MiB", 16 * len(held))
    """
)


def test_every_writable_place_at_once_adds_no_more_host_memory_than_the_limits():
    import psutil

    memory_limit, file_size_limit = 256 * MiB, 32 * MiB
    with KernelREPL(cell_timeout=60, memory_limit=memory_limit, file_size_limit=file_size_limit) as kernel:
        before = _shmem()
        result = kernel.execute(textwrap.dedent(EVERYWHERE))
        worker = psutil.Process(kernel._worker.pid)
        added = _shmem() - before + worker.memory_info().rss
    assert result.error is None, result.error
    assert "anonymous MiB" in result.stdout
    tmp_written = sum(int(n) for n in re.findall(r"'/tmp/[abc]', (\d+)", result.stdout))
    assert tmp_written <= file_size_limit
    bound = memory_limit + file_size_limit + 64 * MiB
    assert added < bound, f"the host holds {added / MiB:.0f} MiB for the worker (bound {bound / MiB:.0f} MiB)"


def test_the_sandboxed_worker_has_a_task_rlimit_that_its_user_namespace_scopes():
    """Where no pids cgroup can be had, RLIMIT_NPROC caps the worker's tasks. It counts per user and namespace: in
    the sandbox's own user namespace it counts the sandbox's tasks only, so it cannot starve the caller's other
    processes (measured: 5 of the user's processes outside did not lower what the sandbox could start). It does not
    bind a caller that is root on the host, for whom the pids cgroup is the cap."""
    from rlm_kernel.isolation.tasks import MAX_TASKS

    with KernelREPL(cell_timeout=20) as kernel:
        result = kernel.execute("import resource\nprint(resource.getrlimit(resource.RLIMIT_NPROC))")
    assert result.stdout.strip() == str((MAX_TASKS, MAX_TASKS))
