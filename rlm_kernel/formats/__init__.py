"""Jupyter-free readers and writers of traces: the notebook export, the HTML tree, the reference log format, replay."""
