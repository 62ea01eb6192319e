# Two commands matter: `make serve` (the service) and `make test` (the test suite).
# Both create the virtual environment on first use; CPU installs pin torch (constraints-cpu.txt).
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: install serve test test-all test-container lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints-cpu.txt -e ".[dev]"
	touch $@

# Serve the shipped model zoo: model_zoo/toyfaces-age, the offline default (see README).
serve: install
	exec $(BIN)/distill serve --port $(PORT)

test: install
	$(BIN)/pytest

test-all: install
	$(BIN)/pytest -m "not container"

test-container: install
	$(BIN)/pytest -m container

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
