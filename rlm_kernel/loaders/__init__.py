"""Reading a context from files: one file, a folder or a glob (files.py), documents such as PDF, HTML and
Parquet (documents.py). Plugged into core by the package root (`core.loaders.register_file_loaders`)."""

from rlm_kernel.loaders.files import Loaded, LoadLimits, describe_skipped, load_context, load_files

__all__ = ["LoadLimits", "Loaded", "describe_skipped", "load_context", "load_files"]
