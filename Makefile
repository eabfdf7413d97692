# The two commands: `make dev` runs the whole stack, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test install browser rabbitmq bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Extras: server (gateway, workers, `tokenrelay dev`), langchain (RelayChatModel), test, bench.
# A plain `pip install tokenrelay` is the client alone.
install: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[server,langchain,test]'

dev: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[server,langchain]'
	$(BIN)/tokenrelay dev $(ARGS)

browser:
	bash scripts/ensure-chromium.sh

rabbitmq:
	bash scripts/ensure-rabbitmq.sh

test: install browser rabbitmq
	$(BIN)/python -m pytest $(ARGS)

bench: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[server,bench]'
	$(BIN)/python -m bench $(ARGS)
