"""The Jupyter surface: magics, kernel, views."""
