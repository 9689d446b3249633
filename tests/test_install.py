"""`pip install rlm_kernel` into a user's existing JupyterLab environment, with pip's own resolver.

The environment is a fresh venv that already holds JupyterLab and every runtime dependency at the
lowest version pyproject.toml allows (so ipykernel 6.29): installing the wheel must change none of
them, bring the `rlm` kernelspec, and `%load_ext rlm_kernel` must run a real `%%rlm` cell in that
environment's own python3 kernel. This proves the lower bounds as well as the install. It needs PyPI
(through pip, with pip's cache); everything the kernels do afterwards is offline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.project_metadata import ROOT, lower_bound, pyproject, runtime_requirements

PROBE = Path(__file__).with_name("install_probe.py")
# An older JupyterLab 4 than the lock's, as a user's environment would have.
JUPYTERLAB = "jupyterlab==4.2.5"
PIP_TIMEOUT_S = 480

pytestmark = [pytest.mark.install, pytest.mark.timeout(900)]


def runtime_lower_bounds() -> dict[str, str]:
    return {name: lower_bound(requirement) for name, requirement in runtime_requirements().items()}


@dataclass
class UserEnv:
    prefix: Path
    environ: dict[str, str]
    before: dict[str, str]  # distribution -> version, before rlm_kernel was installed
    after: dict[str, str]
    install_log: str

    @property
    def python(self) -> str:
        return str(self.prefix / "bin" / "python")

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, env=self.environ, timeout=timeout)

    def probe(self, kernel: str, *cells: str) -> dict[str, Any]:
        done = self.run(self.python, str(PROBE), kernel, *cells)
        assert done.returncode == 0, done.stderr[-3000:]
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def distributions(python: str, environ: dict[str, str]) -> dict[str, str]:
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, env=environ, timeout=120
    )
    assert listed.returncode == 0, listed.stderr
    return {canonicalize_name(d["name"]): d["version"] for d in json.loads(listed.stdout)}


def pip_install(python: str, environ: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [python, "-m", "pip", "install", "--progress-bar", "off", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=PIP_TIMEOUT_S,
    )
    assert done.returncode == 0, f"pip install {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def user_env(tmp_path_factory: pytest.TempPathFactory) -> UserEnv:
    work = tmp_path_factory.mktemp("user_env")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = work.glob("rlm_kernel-*.whl")

    # Nothing of this checkout or of the developer's Jupyter and IPython setup may leak into the user's environment.
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JUPYTER", "VIRTUAL_ENV", "IPYTHON"))}
    prefix = work / "venv"
    environ.update(
        PATH=f"{prefix / 'bin'}{os.pathsep}{environ.get('PATH', '')}",
        JUPYTER_CONFIG_DIR=str(work / "jupyter_config"),
        JUPYTER_DATA_DIR=str(work / "jupyter_data"),
        JUPYTER_RUNTIME_DIR=str(work / "jupyter_runtime"),
        IPYTHONDIR=str(work / "ipython"),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        HF_HUB_OFFLINE="1",
    )
    made = subprocess.run([sys.executable, "-m", "venv", str(prefix)], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    python = str(prefix / "bin" / "python")

    lowest = [f"{name}=={version}" for name, version in runtime_lower_bounds().items()]
    pip_install(python, environ, JUPYTERLAB, *lowest)
    before = distributions(python, environ)
    log = pip_install(python, environ, str(wheel))
    return UserEnv(prefix, environ, before, distributions(python, environ), log)


def test_the_environment_holds_the_lowest_supported_versions_before_the_install(user_env: UserEnv) -> None:
    for name, version in runtime_lower_bounds().items():
        assert Version(user_env.before[name]) == Version(version), name
    assert user_env.before["ipykernel"].startswith("6.29")
    assert "rlm-kernel" not in user_env.before


def test_installing_the_wheel_changes_none_of_the_installed_packages(user_env: UserEnv) -> None:
    changed = {
        name: (v, user_env.after.get(name)) for name, v in user_env.before.items() if user_env.after.get(name) != v
    }
    assert changed == {}, f"pip downgraded, upgraded or removed: {changed}\n{user_env.install_log}"
    assert user_env.after["rlm-kernel"] == pyproject()["project"]["version"]
    assert set(user_env.after) - set(user_env.before) == {"rlm-kernel"}  # every dependency was already there


# The kernels JupyterLab offers (jupyter_client 8.0's `jupyter kernelspec list` logs them to stderr instead).
LIST_KERNELSPECS = (
    "import json; from jupyter_client.kernelspec import KernelSpecManager as M; print(json.dumps(M().get_all_specs()))"
)


def test_the_rlm_kernelspec_is_installed_into_the_environment(user_env: UserEnv) -> None:
    listed = user_env.run(user_env.python, "-c", LIST_KERNELSPECS)
    assert listed.returncode == 0, listed.stderr
    specs = json.loads(listed.stdout)
    assert Path(specs["rlm"]["resource_dir"]) == user_env.prefix / "share" / "jupyter" / "kernels" / "rlm"
    assert specs["rlm"]["spec"]["display_name"] == "Python 3 (RLM)"
    assert {"python3", "rlm"} <= set(specs)


RLM_CELLS = (
    "from rlm_kernel.models.demo import sample_document\nlog = sample_document(20_000)",
    "%%rlm --context log --out report\nWhat went wrong with the coolant, and what was done about it?",
    "print(rlm_last.status, rlm_last.usage.llm_calls > 1, type(report).__name__)",
)


def test_load_ext_runs_an_rlm_cell_in_the_environments_python3_kernel(user_env: UserEnv) -> None:
    seen = user_env.probe("python3", "%load_ext rlm_kernel", *RLM_CELLS)
    assert seen["kernel_info"]["implementation"] == "ipython"
    assert [cell["status"] for cell in seen["cells"]] == ["ok"] * 4, seen
    load, _, rlm_cell, check = seen["cells"]
    assert not [out for out in load["outputs"] if out["type"] == "error"]
    shown = [out for out in rlm_cell["outputs"] if out["type"] == "display_data"]
    assert any("application/vnd.jupyter.widget-view+json" in out["data"] for out in shown)  # the live call tree
    assert [out["text"] for out in check["outputs"]] == ["done True str\n"]


def test_the_rlm_kernel_of_the_environment_preloads_the_extension(user_env: UserEnv) -> None:
    seen = user_env.probe("rlm", *RLM_CELLS)
    assert seen["kernel_info"]["implementation"] == "rlm_kernel"
    assert [cell["status"] for cell in seen["cells"]] == ["ok"] * 3, seen
    assert [out["text"] for out in seen["cells"][2]["outputs"]] == ["done True str\n"]
