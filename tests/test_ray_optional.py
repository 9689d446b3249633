"""Ray is optional: without it nothing imports it and executor="ray" says in one line what to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rlm_kernel import RLM
from rlm_kernel.core.errors import ConfigError


def test_the_default_path_never_imports_ray():
    code = (
        "import sys, rlm_kernel\n"
        "from rlm_kernel import RLM\n"
        "RLM(model='scripted/demo').batch([('a', 'q')])\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_executor_ray_without_ray_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    for name in [m for m in sys.modules if m.startswith("rlm_kernel.distributed")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ConfigError, match=r"^executor='ray' needs Ray: pip install 'rlm_kernel\[ray\]'$"):
        RLM(model="scripted/demo").batch([("a", "q")], executor="ray")


def test_an_unknown_executor_name_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown executor 'dask'; known: ray"):
        RLM(model="scripted/demo").batch([("a", "q")], executor="dask")
