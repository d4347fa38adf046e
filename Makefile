# The README's commands. `make demo` and `make test` work on a fresh machine with Python 3.11+.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch first and pinned: a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test test-fast test-slow lint format docs completions bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.deps: pyproject.toml setup.py memctl/recall/_memrank.c | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

deps: $(VENV)/.deps

demo: $(VENV)/.deps
	bash scripts/demo.sh

lint: $(VENV)/.deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.deps
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The whole suite except the long crash/fuzz loops (marked slow); model tests included.
test: lint
	$(BIN)/python -m pytest -q -m "not slow"

test-fast: $(VENV)/.deps
	$(BIN)/python -m pytest -q -m "not slow and not model"

test-slow: $(VENV)/.deps
	$(BIN)/python -m pytest -q -m slow

docs: $(VENV)/.deps
	$(BIN)/python scripts/gen_docs.py

completions: $(VENV)/.deps
	$(BIN)/python scripts/gen_completions.py

bench: $(VENV)/.deps
	$(BIN)/memctl bench core --records 10000

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
