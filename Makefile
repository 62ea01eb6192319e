# Two commands matter: `make serve` (the service) and `make test` (the test suite).
# Both create the virtual environment on first use and install the CPU build of torch:
#   1. torch alone from PyTorch's CPU index (TORCH_INDEX), pinned by constraints-cpu.txt (torch==X+cpu);
#   2. the project from PyPI with the same constraints: the installed +cpu torch satisfies it, so pip
#      never looks for (or takes) PyPI's CUDA build.
# `make serve` installs the serving dependencies only (no training packages); `make test` adds the
# training and test ones (the `dev` extra). Every package but torch comes at the version pinned in the lock
# files requirements/serve.txt and requirements/dev.txt (`make lock` refreshes them, README "Lock files").
# GPU installs: see README, "GPU install".
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_INSTALL := $(BIN)/pip install --quiet -c constraints-cpu.txt

.PHONY: install install-serve serve test test-all test-container lint lock clean

install: $(VENV)/.installed-dev
install-serve: $(VENV)/.installed-serve

$(BIN)/python:
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# --no-deps: only torch comes from the CPU index; its dependencies come from PyPI in the next step.
$(VENV)/.torch-cpu: constraints-cpu.txt | $(BIN)/python
	$(PIP_INSTALL) --no-deps --index-url $(TORCH_INDEX) torch
	touch $@

$(VENV)/.installed-serve: pyproject.toml requirements/serve.txt $(VENV)/.torch-cpu
	$(PIP_INSTALL) -r requirements/serve.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml requirements/dev.txt $(VENV)/.torch-cpu
	$(PIP_INSTALL) -r requirements/dev.txt -e ".[dev]"
	touch $@ $(VENV)/.installed-serve

# Serve the shipped model zoo: model_zoo/toyfaces-age, the offline default (see README).
serve: install-serve
	exec $(BIN)/distill serve --port $(PORT)

test: install
	$(BIN)/pytest

test-all: install
	$(BIN)/pytest -m "not container"

test-container: install
	$(BIN)/pytest -m container

# Lint, the format and the types: ruff's rules, `ruff format` (line length 110) and mypy on core, model_zoo,
# engines, networks, editing and app (pyproject's [tool.mypy]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The lock files, resolved by uv for Python 3.11 (Debian bookworm's, the images'): dev.txt (`make test`: the
# training and test tools) first, then serve.txt (`make serve`, the images) and train.txt (the training image)
# within its pins, so one package has one version everywhere. Pins already in a file are kept: pass
# LOCK_ARGS=--upgrade to move everything to the newest releases, or LOCK_ARGS="--upgrade-package onnxruntime"
# for one. torch is left out of the files (its pin, constraints-cpu.txt's, is the CPU wheel here and the same
# version of the CUDA wheel on a GPU machine); its CPU wheel's dependencies are resolved from TORCH_LOCK_SOURCE
# (PyTorch's CPU index; a folder of wheels: TORCH_LOCK_SOURCE="--find-links /path/to/wheels").
UV_VERSION := 0.13.10
TORCH_LOCK_SOURCE ?= --extra-index-url $(TORCH_INDEX) --index-strategy unsafe-best-match
LOCK := $(BIN)/uv pip compile pyproject.toml --quiet --python-version 3.11 -c constraints-cpu.txt \
	--no-emit-package torch --custom-compile-command "make lock" $(TORCH_LOCK_SOURCE) $(LOCK_ARGS)

lock: | $(BIN)/python
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(LOCK) --extra dev -o requirements/dev.txt
	$(LOCK) -c requirements/dev.txt -o requirements/serve.txt
	$(LOCK) -c requirements/dev.txt --extra train -o requirements/train.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
