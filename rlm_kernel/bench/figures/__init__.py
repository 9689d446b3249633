"""The performance figures (`rlm bench perf`, `rlm bench features`, `python -m rlm_kernel.bench.figures.reliability`,
`... .trace_perf`): scripts that measure this engine against scripted models and the reference package.

They run from a source checkout (`make bench`, `make bench-ref`) and are left out of the wheel
(pyproject.toml's hatch `exclude`): a user's install carries the benchmark tasks, not the measuring rigs.
"""
