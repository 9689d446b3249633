"""Each escape of issue 13 as an attack that must fail under isolation="kernel".

Where the weaker `kernel-audit` mode lets an attack through, a control test runs the same attack there and
sees it succeed: the attack is real, and the README's table of what each mode stops is measured, not assumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from rlm_kernel import RLM
from rlm_kernel.bench.figures.escapes import added_threads
from rlm_kernel.isolation import AuditKernelREPL, KernelREPL
from rlm_kernel.models.server import ModelServer
from tests.conftest import repl

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux namespaces"),
]

PLANTED_KEY = "sk-planted-0123456789abcdefghij"
# Model code reaches its own bridge like this: the socket path and token sit in the stubs' closures.
OWN_BRIDGE = "cells = dict(zip(llm_query.__code__.co_freevars, (c.cell_contents for c in llm_query.__closure__)))\n"


def run(repl: KernelREPL, code: str) -> str:
    result = repl.execute(textwrap.dedent(code))
    return result.stdout + (result.value or "") + (result.error or "")


@pytest.fixture(params=[KernelREPL, AuditKernelREPL], ids=["kernel", "kernel-audit"])
def any_mode(request: pytest.FixtureRequest) -> Iterator[KernelREPL]:
    with request.param(cell_timeout=20) as repl:
        repl.set("llm_query", lambda prompt: f"echo: {prompt}")
        yield repl


@pytest.fixture
def sandboxed() -> Iterator[KernelREPL]:
    with KernelREPL(cell_timeout=20) as repl:
        repl.set("llm_query", lambda prompt: f"echo: {prompt}")
        yield repl


@pytest.fixture
def audited() -> Iterator[KernelREPL]:
    with AuditKernelREPL(cell_timeout=20) as repl:
        repl.set("llm_query", lambda prompt: f"echo: {prompt}")
        yield repl


# -- 1. the notebook kernel, found through /proc ---------------------------------------------------------

NOTEBOOK_ATTACK = """
import glob, json, os, time
found = []
for cmdline in glob.glob('/proc/[0-9]*/cmdline'):  # the issue's way in: the kernel's "-f <connection file>"
    try:
        words = open(cmdline, 'rb').read().split(b'\\0')
    except OSError:
        continue
    found += [w.decode() for w in words if w.endswith(b'.json') and b'kernel' in w]
found.append({connection!r})  # and, stronger, the connection file's path given outright
ran = []
for path in found:
    try:
        info = json.load(open(path))
    except OSError as exc:
        ran.append(f'cannot read {{path}}: {{exc}}')
        continue
    from jupyter_client import BlockingKernelClient
    client = BlockingKernelClient()
    client.load_connection_info(info)
    client.start_channels()
    client.execute("open({marker!r}, 'w').write(str(notebook_secret))")
    time.sleep(1)
    client.stop_channels()
    ran.append('queued')
print(ran)
"""


@pytest.fixture
def notebook_kernel(tmp_path: Path) -> Iterator[Path]:
    """A real ipykernel on 127.0.0.1 holding a private variable, as the user's notebook kernel would."""
    from jupyter_client import KernelManager

    manager = KernelManager(connection_file=str(tmp_path / "kernel-notebook.json"))
    manager.start_kernel(cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    client.execute_interactive("notebook_secret = 'private to the notebook'", timeout=30)
    try:
        yield Path(manager.connection_file)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _notebook_ran(marker: Path) -> bool:
    for _ in range(30):  # the notebook kernel runs a queued request within moments
        if marker.exists():
            return True
        time.sleep(0.1)
    return False


def test_model_code_cannot_run_code_in_the_notebook_kernel(sandboxed, notebook_kernel, tmp_path):
    marker = tmp_path / "notebook-ran-it.txt"
    output = run(sandboxed, NOTEBOOK_ATTACK.format(connection=str(notebook_kernel), marker=str(marker)))
    assert "cannot read" in output and "queued" not in output
    assert not _notebook_ran(marker)


def test_control_the_notebook_attack_gets_through_kernel_audit(audited, notebook_kernel, tmp_path):
    marker = tmp_path / "notebook-ran-it.txt"
    run(audited, NOTEBOOK_ATTACK.format(connection=str(notebook_kernel), marker=str(marker)))
    assert _notebook_ran(marker) and marker.read_text() == "private to the notebook"


# -- 2. the caller's API keys, through /proc/<pid>/environ ------------------------------------------------

ENVIRON_ATTACK = f"""
import glob, os
def read(path):
    try:
        return open(path, 'rb').read()
    except OSError:
        return b''
hits = [p for p in glob.glob('/proc/[0-9]*/environ') if {PLANTED_KEY!r}.encode() in read(p)]
print('own environment:', {PLANTED_KEY!r} in str(dict(os.environ)), 'other processes:', hits)
"""


@pytest.fixture
def keyholder() -> Iterator[int]:
    """A process of the caller's that started with an API key in its environment."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], env={**os.environ, "OPENAI_API_KEY": PLANTED_KEY}
    )
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def test_model_code_cannot_read_the_callers_keys_from_proc(sandboxed, keyholder):
    output = run(sandboxed, ENVIRON_ATTACK)
    assert "own environment: False other processes: []" in output


def test_control_kernel_audit_lets_proc_environ_through(audited, keyholder):
    assert f"/proc/{keyholder}/environ" in run(audited, ENVIRON_ATTACK)


# -- 3. switching the guard off in plain Python, and writes that raise no audit event -----------------------

GUARD_ATTACKS = {
    "replace os.path.realpath, then write": """
        import os.path
        os.path.realpath = lambda p: {inside!r} + '/x'
        open({target!r}, 'w').write('escaped')
    """,
    "reset the guard's module globals, then write": """
        import sys
        for module in list(sys.modules.values()):
            if hasattr(module, '_WRITE_FLAGS'):
                module._WRITE_FLAGS = 0
                module._PROCESS_EVENTS = frozenset()
        open({target!r}, 'w').write('escaped')
    """,
    "a relative path with dir_fd": """
        import os
        os.makedirs('a/b/c', exist_ok=True)
        fd = os.open('.', os.O_RDONLY | os.O_DIRECTORY)  # this directory: inside
        os.chdir('a/b/c')  # a hook resolves relative paths from here; the system, from the descriptor
        os.close(os.open('../../../' + {target!r}.lstrip('/'), os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    """,
    "mkfifo outside": """
        import os
        os.mkfifo({target!r})
    """,
    "_posixsubprocess.fork_exec": """
        import _posixsubprocess, os
        r, w = os.pipe()
        _posixsubprocess.fork_exec(
            [b'/usr/bin/touch', {target!r}.encode()], [b'/usr/bin/touch'], True, (w,), None, None,
            -1, -1, -1, -1, -1, -1, r, w, False, False, -1, None, None, None, -1, None, False)
        os.read(r, 100)
    """,
    "libc system() through ctypes": """
        import ctypes
        ctypes.CDLL(None).system(b'touch ' + {target!r}.encode())
    """,
}


@pytest.mark.parametrize("attack", GUARD_ATTACKS.values(), ids=GUARD_ATTACKS.keys())
def test_writes_and_processes_that_dodge_an_audit_hook_change_nothing_on_the_host(sandboxed, tmp_path, attack):
    target = tmp_path / "escaped"
    run(sandboxed, attack.format(target=str(target), inside="/tmp"))
    time.sleep(0.2)  # a process that had been started would have touched it by now
    assert not target.exists()


def test_processes_dodging_an_audit_hook_do_not_run_inside_the_sandbox_either(sandboxed):
    for name in ("_posixsubprocess.fork_exec", "libc system() through ctypes"):
        run(sandboxed, GUARD_ATTACKS[name].format(target="/tmp/ran", inside="/tmp"))
        assert run(sandboxed, "import os\nos.path.exists('/tmp/ran')") == "False", name


@pytest.mark.parametrize(
    "name", ["replace os.path.realpath, then write", "a relative path with dir_fd", "mkfifo outside"]
)
def test_control_these_get_past_the_audit_hook(audited, tmp_path, name):
    target = tmp_path / "escaped"
    run(audited, GUARD_ATTACKS[name].format(target=str(target), inside=str(audited.workdir)))
    assert target.exists()


# -- 4. another run's files, token and functions ------------------------------------------------------------

OTHER_RUN_ATTACK = """
import glob, os, socket, json, struct
seen = []
for path in glob.glob('/tmp/rlm-*') + glob.glob('/tmp/rlm-*/*') + [{victim_dir!r}]:
    try:
        seen.append((path, sorted(os.listdir(path)) if os.path.isdir(path) else open(path, 'rb').read(64)))
    except OSError as exc:
        seen.append((path, type(exc).__name__))
called = None
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect({victim_socket!r})
    body = json.dumps({{'token': {victim_token!r}, 'name': 'charge', 'args': []}}).encode()
    s.sendall(struct.pack('!Q', len(body)) + body)
    called = s.recv(1000)
except OSError as exc:
    called = type(exc).__name__
print('seen', seen)
print('called', called)
"""


def test_model_code_cannot_reach_another_concurrent_run(sandboxed):
    charged = []
    with KernelREPL() as victim:
        victim.set("context", "the victim's private context")
        victim.set("charge", lambda: charged.append(1) or "charged to the victim")
        output = run(
            sandboxed,
            OTHER_RUN_ATTACK.format(
                victim_dir=str(victim._dir),
                victim_socket=str(victim._bridge.path),
                victim_token=victim._bridge.token,  # even handed the token outright
            ),
        )
    assert "called FileNotFoundError" in output
    assert "victim's private context" not in output and str(victim._dir) + "', [" not in output
    assert charged == []


def test_control_kernel_audit_reaches_another_run_given_its_token(audited):
    charged = []
    with AuditKernelREPL() as victim:
        victim.set("charge", lambda: charged.append(1) or "charged to the victim")
        run(
            audited,
            OTHER_RUN_ATTACK.format(
                victim_dir=str(victim._dir), victim_socket=str(victim._bridge.path), victim_token=victim._bridge.token
            ),
        )
    assert charged == [1]


def test_no_token_or_connection_file_lies_where_another_run_could_read_it(any_mode):
    directory = any_mode._dir
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    for path in directory.rglob("*"):
        if path.is_file():
            assert any_mode._bridge.token.encode() not in path.read_bytes()
    for pid in filter(str.isdigit, os.listdir("/proc")):  # nor on any command line
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert any_mode._bridge.token.encode() not in cmdline


# -- 5. leaning on the caller through the bridge --------------------------------------------------------------

HUGE_REQUESTS = (
    OWN_BRIDGE
    + """
import socket, struct, threading
def send():
    s = socket.socket(socket.AF_UNIX)
    s.connect(cells['path'])
    try:
        s.sendall(struct.pack('!Q', 120 * 1024**2) + b'[' + b' ' * (120 * 1024**2 - 2) + b']')
        return s.recv(1000)
    except OSError as exc:
        return type(exc).__name__
    finally:
        s.close()
replies = []
threads = [threading.Thread(target=lambda: replies.append(send())) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(replies)
"""
)


def test_huge_bridge_requests_are_refused_before_they_are_read(sandboxed):
    tracemalloc.start()
    try:
        output = run(sandboxed, HUGE_REQUESTS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert output.count("over the limit") + output.count("BrokenPipeError") + output.count("ConnectionResetError") == 4
    assert peak < 20 * 1024**2  # the caller never held the 480 MB
    assert run(sandboxed, "llm_query('still fine')") == "'echo: still fine'"


MANY_CONNECTIONS = (
    OWN_BRIDGE
    + """
import socket, time
held = []
for _ in range(200):
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)
    try:
        s.connect(cells['path'])
    except BlockingIOError:
        pass  # the backlog is full: the bridge is not accepting more
    held.append(s)
time.sleep(1.5)
for s in held: s.close()
print('held', len(held))
"""
)


def test_many_idle_bridge_connections_cost_the_caller_a_bounded_number_of_threads(sandboxed):
    with added_threads() as added:
        output = run(sandboxed, MANY_CONNECTIONS)
    assert "held 200" in output
    assert added[0] <= 1 + 16  # the sampler, and at most one thread per connection slot
    assert run(sandboxed, "llm_query('still fine')") == "'echo: still fine'"


MODEL_SERVER_ATTACK = (
    OWN_BRIDGE
    + """
import json, urllib.request
request = urllib.request.Request(
    {url!r} + '/chat/completions',
    data=json.dumps({{'model': 'x', 'messages': [{{'role': 'user', 'content': 'off the ledger'}}]}}).encode(),
    headers={{'Authorization': 'Bearer ' + cells['token'], 'Content-Type': 'application/json'}},
)
try:
    print('reached', urllib.request.urlopen(request, timeout=5).status)
except OSError as exc:
    print('refused', type(exc).__name__, exc)
"""
)


def test_the_bridge_token_cannot_reach_the_model_server(sandboxed):
    with ModelServer(lambda messages: "an answer outside the ledger") as server:
        output = run(sandboxed, MODEL_SERVER_ATTACK.format(url=server.url))
        assert "refused" in output and server.stats()["requests"] == 0


def test_control_kernel_audit_reaches_the_model_server_directly(audited):
    with ModelServer(lambda messages: "an answer outside the ledger") as server:
        output = run(audited, MODEL_SERVER_ATTACK.format(url=server.url))
        assert "reached 200" in output and server.stats()["requests"] == 1


# -- 6. the host's folders, as the sandbox's view names them --------------------------------------------------

HOST_LAYOUT_ATTACK = (
    OWN_BRIDGE
    + """
import json, os, socket, sys
seen = {}
for path in ("/proc/self/mountinfo", "/proc/self/mounts", "/proc/thread-self/mountinfo", "/proc/mounts",
             os.path.join(sys.prefix, "pyvenv.cfg")):
    try:
        with open(path) as file:
            seen[path] = file.read()
    except OSError as exc:
        seen[path] = type(exc).__name__
seen["sys"] = [sys.executable, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.path, sys.argv, os.getcwd()]
import sysconfig
seen["build variables"] = {k: v for k, v in sysconfig.get_config_vars().items() if isinstance(v, str)}
seen["environ"] = dict(os.environ)
seen["files"] = sorted({str(getattr(m, "__file__", None)) for m in list(sys.modules.values())})
with socket.socket(socket.AF_UNIX) as bridge:
    bridge.connect(cells["path"])
    seen["bridge"] = [cells["path"], bridge.getpeername()]
FINAL(json.dumps(seen))
"""
)


def _host_folders(run_dirs: Path) -> set[str]:
    """Folders of the host that the sandbox's view must not name: the venv, the checkout, the base Python
    (unless it is the system's, in /usr), where runs keep their directories, and the user's home."""
    folders = {sys.prefix, os.path.realpath(sys.prefix), str(Path(__file__).resolve().parents[1]), str(run_dirs)}
    base = os.path.realpath(sys.base_prefix)
    if not base.startswith("/usr"):
        folders.add(base)
    folders.add(str(Path.home()))
    return {folder for folder in folders if folder not in ("/", "/tmp", "/usr")}  # names the sandbox has itself


def test_the_sandbox_names_none_of_the_hosts_folders(scripted, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the run's directory (and bridge) goes
    model = scripted([repl(HOST_LAYOUT_ATTACK), repl("FINAL('unreachable')")])
    result = RLM(model=model, isolation="kernel").completion("some context", "where do you run?")
    assert result.status == "done", result.error
    seen = json.loads(result.answer)
    assert "home = " in seen[os.path.join(seen["sys"][1], "pyvenv.cfg")]  # the attack read what it looked for
    assert seen["sys"][4] and seen["files"] and seen["bridge"][1] and seen["build variables"]
    text = result.answer
    assert [folder for folder in _host_folders(tmp_path) if folder in text] == []
    assert "rlm-run-" not in text


def test_control_kernel_audit_names_the_hosts_folders(audited):
    assert sys.prefix in run(audited, HOST_LAYOUT_ATTACK.replace("FINAL(json.dumps(seen))", "print(seen)"))
