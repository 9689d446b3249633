"""The `rlm` kernel: kernelspec shipping and installer, protocol conformance, extension preload."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import jupyter_kernel_test
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel

from rlm_kernel.jupyter import install as install_mod
from rlm_kernel.jupyter.install import DISPLAY_NAME, kernel_spec_dict

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).with_name("jupyter")

pytestmark = pytest.mark.timeout(180)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlm_kernel", *args], capture_output=True, text=True, timeout=60)


# --- kernelspec and installer -------------------------------------------------------------------


def test_shipped_kernel_json_matches_installer() -> None:
    shipped = json.loads((ROOT / "kernelspec" / "rlm" / "kernel.json").read_text(encoding="utf-8"))
    assert shipped == kernel_spec_dict("python", DISPLAY_NAME)


def test_installed_spec_is_found(rlm_spec: Path) -> None:
    assert Path(KernelSpecManager().find_kernel_specs()["rlm"]) == rlm_spec
    spec = json.loads((rlm_spec / "kernel.json").read_text(encoding="utf-8"))
    assert spec == kernel_spec_dict(sys.executable, DISPLAY_NAME)

    listed = subprocess.run([str(JUPYTER), "kernelspec", "list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert any(line.split()[:2] == ["rlm", str(rlm_spec)] for line in listed.stdout.splitlines())


def test_cli_install(tmp_path: Path) -> None:
    done = run_cli("install", "--prefix", str(tmp_path), "--name", "rlm-test", "--display-name", "X")
    assert done.returncode == 0, done.stderr
    target = tmp_path / "share" / "jupyter" / "kernels" / "rlm-test"
    assert str(target) in done.stdout
    assert json.loads((target / "kernel.json").read_text(encoding="utf-8")) == kernel_spec_dict(sys.executable, "X")


@pytest.mark.parametrize("args", [(), ("bogus",)])
def test_cli_without_subcommand_exits_2(args: tuple[str, ...]) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stderr.startswith("rlm: error:")  # one line, as every rlm command error


@pytest.mark.parametrize(
    ("flags", "in_venv", "expected"),
    [
        ({}, True, {"user": False, "prefix": sys.prefix}),  # default in a venv: --sys-prefix
        ({}, False, {"user": True, "prefix": None}),  # default elsewhere: --user
        ({"user": True}, True, {"user": True, "prefix": None}),
        ({"sys_prefix": True}, False, {"user": False, "prefix": sys.prefix}),
        ({"prefix": "/p"}, True, {"user": False, "prefix": "/p"}),
    ],
)
def test_cli_location(
    monkeypatch: pytest.MonkeyPatch, flags: dict[str, Any], in_venv: bool, expected: dict[str, Any]
) -> None:
    """Where `python -m rlm_kernel install` writes for each choice of location flags."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(install_mod, "install", lambda **kw: calls.append(kw) or "/somewhere")
    monkeypatch.setattr(sys, "base_prefix", "/base" if in_venv else sys.prefix)
    args = argparse.Namespace(**{"user": False, "sys_prefix": False, "prefix": None, **flags})
    args.name, args.display_name = "rlm", DISPLAY_NAME
    assert install_mod.run(args) == 0
    assert calls == [{**expected, "name": "rlm", "display_name": DISPLAY_NAME}]


@pytest.mark.slow
def test_wheel_ships_kernelspec(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("rlm_kernel-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".data/data/share/jupyter/kernels/rlm/kernel.json")]
        assert json.loads(zf.read(name)) == kernel_spec_dict("python", DISPLAY_NAME)


# --- the running kernel ---------------------------------------------------------------------------


@pytest.mark.kernel
class RLMKernelTests(jupyter_kernel_test.KernelTests):
    """Protocol conformance (jupyter_kernel_test) plus the rlm-specific checks, on one kernel."""

    kernel_name = "rlm"
    language_name = "python"
    file_extension = ".py"

    code_hello_world = "print('hello, world')"
    code_stderr = "import sys; print('test', file=sys.stderr)"
    completion_samples = [{"text": "zi", "matches": {"zip"}}]
    complete_code_samples = ["1", "print('hello, world')", "def f(x):\n  return x*2\n\n\n"]
    incomplete_code_samples = ["print('''hello", "def f(x):\n  x*2"]
    invalid_code_samples = ["import = 7q"]
    code_page_something = "zip?"
    code_generate_error = "raise"
    code_execute_result = [
        {"code": "1+2+3", "result": "6"},
        {"code": "[n*n for n in range(1, 4)]", "result": "[1, 4, 9]"},
    ]
    # No widgets here: execute_helper's message validation has no comm_open schema.
    code_display_data = [
        {"code": "from IPython.display import HTML, display; display(HTML('<b>test</b>'))", "mime": "text/html"},
        {"code": "from IPython.display import Math, display; display(Math('\\\\frac{1}{2}'))", "mime": "text/latex"},
    ]
    code_history_pattern = "1?2*"
    # "range" is left out: ipykernel answers session 0 (the current one) where jupyter_kernel_test
    # 0.7 expects the absolute number, so the plain python3 kernel fails that check too.
    supported_history_operations = ("tail", "search")
    code_inspect_sample = "zip"
    code_clear_output = "from IPython.display import clear_output; clear_output()"

    def evaluate(self, code: str) -> str:
        """Run `code` in the kernel and return its execute_result as text/plain."""
        results: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "execute_result":
                results.append(msg["content"]["data"]["text/plain"])

        reply = self.kc.execute_interactive(code, timeout=30, output_hook=hook)
        assert reply["content"]["status"] == "ok", reply["content"]
        assert len(results) == 1
        return results[0]

    def test_rlm_kernel_info(self) -> None:
        self.kc.kernel_info()
        content = self.kc.get_shell_msg(timeout=30)["content"]
        assert content["implementation"] == "rlm_kernel"
        assert content["language_info"]["name"] == "python"
        assert "%%rlm" in content["banner"]
        assert content["help_links"][0]["text"] == "rlm_kernel README"
        assert any(link["text"] == "Python Reference" for link in content["help_links"])

    def test_rlm_extension_preloaded(self) -> None:
        assert self.evaluate("'rlm' in get_ipython().magics_manager.magics['cell']") == "True"

    def test_a_notebooks_own_load_ext_is_quiet_in_the_rlm_kernel(self) -> None:
        # Exports and the quickstart start with it (they also run under python3): no "already loaded" note.
        reply, outputs = self.execute_helper(code="%load_ext rlm_kernel")
        assert reply["content"]["status"] == "ok"
        assert [m for m in outputs if m["msg_type"] in ("stream", "display_data", "execute_result")] == []
        assert self.evaluate("'rlm' in get_ipython().magics_manager.magics['cell']") == "True"

    def test_rlm_kernel_start_skips_litellm(self) -> None:
        assert self.evaluate("import sys; 'litellm' in sys.modules") == "False"

    def test_rlm_kernel_env_from_spec(self) -> None:
        assert self.evaluate("import os; os.environ['LITELLM_LOCAL_MODEL_COST_MAP']") == "'True'"


@pytest.mark.kernel
def test_kernel_survives_broken_extension(tmp_path: Path) -> None:
    """A failing `load_ipython_extension` is logged as a warning and the kernel still runs code."""
    # The profile's kernel config runs in the kernel process before the kernel is created.
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(
        "import rlm_kernel\n"
        "def boom(ipython):\n"
        "    raise RuntimeError('extension exploded')\n"
        "rlm_kernel.load_ipython_extension = boom\n",
        encoding="utf-8",
    )
    env = {**os.environ, "IPYTHONDIR": str(profile.parent)}
    log = tmp_path / "kernel.log"
    with log.open("w") as stderr:
        km, kc = start_new_kernel(kernel_name="rlm", env=env, stderr=stderr)
        try:
            result = kc.execute_interactive("6 * 7", timeout=30)
            assert result["content"]["status"] == "ok"
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    text = log.read_text(encoding="utf-8")
    assert "Could not load the rlm_kernel extension" in text
    assert "extension exploded" in text
