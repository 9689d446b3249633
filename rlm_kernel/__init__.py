"""rlm_kernel: Recursive Language Models in the Jupyter notebook."""

from rlm_kernel.core import RLM, RLMResult

__version__ = "0.1.0"
__all__ = ["RLM", "RLMResult", "__version__"]
