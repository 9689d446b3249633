"""Benchmarks: engine performance figures (and, later, long-context tasks)."""
