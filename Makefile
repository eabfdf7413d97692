# The two commands: `make dev` runs the whole stack, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test install bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'

dev: $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	$(BIN)/tokenrelay dev $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)
