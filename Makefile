# The two commands a newcomer runs: `make demo` (the main job) and `make test`.
# Both create .venv from the hash-locked requirements.lock when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Keep litellm offline at import and when counting tokens.
export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1

DEMO_DOC := build/sample_station_log.txt
DEMO_QUERY := What went wrong with the coolant, and what was done about it?

.PHONY: demo demo-cli test bench lock clean

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

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m rlm_kernel.bench.engine_perf

# Re-resolve the lock after editing requirements.in (needs uv: pip install uv).
lock:
	uv pip compile requirements.in --universal --generate-hashes --python-version 3.10 --no-header -o requirements.lock

clean:
	rm -rf $(VENV) build
