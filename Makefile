# Two commands matter: `make serve` (the service) and `make test` (the test suite).
# Both create the virtual environment on first use and install the CPU build of torch:
#   1. torch alone from PyTorch's CPU index (TORCH_INDEX), pinned by constraints-cpu.txt (torch==X+cpu);
#   2. the project from PyPI with the same constraints: the installed +cpu torch satisfies it, so pip
#      never looks for (or takes) PyPI's CUDA build.
# `make serve` installs the serving dependencies only (no training packages); `make test` adds the
# training and test ones (the `dev` extra). GPU installs: see README, "GPU install".
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_INSTALL := $(BIN)/pip install --quiet -c constraints-cpu.txt

.PHONY: install install-serve serve test test-all test-container lint clean

install: $(VENV)/.installed-dev
install-serve: $(VENV)/.installed-serve

$(BIN)/python:
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# --no-deps: only torch comes from the CPU index; its dependencies come from PyPI in the next step.
$(VENV)/.torch-cpu: constraints-cpu.txt | $(BIN)/python
	$(PIP_INSTALL) --no-deps --index-url $(TORCH_INDEX) torch
	touch $@

$(VENV)/.installed-serve: pyproject.toml $(VENV)/.torch-cpu
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch-cpu
	$(PIP_INSTALL) -e ".[dev]"
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
# engines and app (pyproject's [tool.mypy]).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
