"""`RLMKernel`: the IPython kernel with the rlm_kernel extension preloaded.

Launched by the `rlm` kernelspec as `python -m rlm_kernel.jupyter.kernel -f {connection_file}`.
Everything else (magics, completion, debugger, widgets) is the stock IPython kernel, so notebooks
stay portable: they also run under `python3` after `%load_ext rlm_kernel`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, cast

from ipykernel.ipkernel import IPythonKernel
from ipykernel.kernelapp import IPKernelApp
from traitlets import List

from rlm_kernel import __version__

EXTENSION = "rlm_kernel"
# The project page renders README.md (the package long description); there is no repository URL yet.
README_URL = "https://pypi.org/project/rlm-kernel/"


class RLMKernel(IPythonKernel):
    """A thin `IPythonKernel` subclass: own name, banner and help links; loads the extension."""

    implementation = "rlm_kernel"
    implementation_version = __version__
    # language_info is inherited unchanged: the language stays "python".
    banner = (
        f"Python {sys.version.split()[0]} | rlm_kernel {__version__}: Recursive Language Models\n"
        "Ask a model about your data in a %%rlm cell; %rlm? lists the options.\n"
    )
    help_links = List(
        [
            {"text": "rlm_kernel README", "url": README_URL},
            *cast("list[dict[str, str]]", IPythonKernel.class_traits()["help_links"].default()),
        ]
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # A broken or missing extension must not kill the kernel: it stays a usable Python kernel.
        # Loaded directly, not through the extension manager, so that a notebook's own `%load_ext rlm_kernel`
        # (which it needs under python3) loads it again quietly instead of printing "already loaded".
        try:
            assert self.shell is not None  # IPythonKernel.__init__ made it
            extension = importlib.import_module(EXTENSION)
            load = getattr(extension, "load_ipython_extension", None)
            if load is None:
                self.log.warning("%s has no load_ipython_extension; %%rlm is unavailable", EXTENSION)
                return
            load(self.shell)
        except Exception:
            self.log.warning("Could not load the %s extension; %%rlm is unavailable", EXTENSION, exc_info=True)


if __name__ == "__main__":
    IPKernelApp.launch_instance(kernel_class=RLMKernel)
