"""JupyterLab and Debian's chromium for the browser tests.

`playwright install` cannot download browsers here, so Playwright drives the system
chromium (`.ci/run` installs it with apt-get). JupyterLab runs as a subprocess with
temporary config, data and runtime directories and no token, so nothing leaks in from,
or out to, the developer's own Jupyter setup.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import nbformat
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM = Path(os.environ.get("RLM_CHROMIUM", "/usr/bin/chromium"))
# Flags that work for Debian's chromium as root in a container with no GPU and no network.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
# JupyterLab's first-run toasts (news opt-in, update check) would cover the outputs in screenshots.
_LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}


def require_chromium() -> str:
    """The chromium executable, or a test failure that says how to install it (never a skip)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium. "
            "Run .ci/run, or: apt-get update && apt-get install -y chromium",
            pytrace=False,
        )
    return str(CHROMIUM)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_notebook(path: Path, cells: list[str], kernel: str = "rlm") -> Path:
    """A notebook of code cells bound to `kernel`, so JupyterLab starts it without asking."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    nb.metadata["kernelspec"] = {"name": kernel, "display_name": kernel, "language": "python"}
    nbformat.write(nb, path)
    return path


class JupyterLab:
    """`jupyter lab` on 127.0.0.1 serving `root_dir`, with its own config, data and runtime dirs."""

    def __init__(self, root_dir: Path, state_dir: Path, log_path: Path) -> None:
        self.root_dir = root_dir
        self.state_dir = state_dir
        self.log_path = log_path
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def notebook_url(self, name: str) -> str:
        # A named workspace with ?reset: no tabs restored from an earlier session.
        return f"{self.url}/lab/workspaces/test/tree/{name}?reset"

    def start(self, timeout: float = 90.0) -> JupyterLab:
        env = dict(os.environ)  # keeps JUPYTER_PATH, where conftest installed the `rlm` kernelspec
        for name in ("config", "data", "runtime"):
            path = self.state_dir / name
            path.mkdir(parents=True, exist_ok=True)
            env[f"JUPYTER_{name.upper()}_DIR"] = str(path)
        for relative, settings in _LAB_SETTINGS.items():
            target = self.state_dir / "config" / "lab" / "user-settings" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(settings), encoding="utf-8")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={self.port}",
                "--ServerApp.port_retries=0",
                "--ServerApp.token=",
                "--ServerApp.password=",
                f"--ServerApp.root_dir={self.root_dir}",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self._process.returncode}; log: {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)  # polling a starting server; nothing to wait on instead
        raise RuntimeError(f"jupyter lab did not answer within {timeout:.0f} s; log: {self.log_path}")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()  # the server shuts its kernels down on SIGTERM
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> JupyterLab:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium (headless) under Playwright; tests open their pages in it."""
    executable = require_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(browser: Browser, viewport: dict[str, int] | None = None) -> Iterator[Page]:
    """A fresh page (its own browser context: no storage shared with other tests), closed after."""
    context = browser.new_context(viewport=viewport or {"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()
