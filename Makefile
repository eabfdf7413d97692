# The two commands: `make dev` runs the whole stack, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test install browser js rabbitmq bench

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

# The AI SDK tests drive the real `ai` npm package, pinned by tests/js/package-lock.json.
JS_STAMP := tests/js/node_modules/.installed

$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	bash scripts/ensure-node.sh
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	touch $@

js: $(JS_STAMP)

test: install browser js rabbitmq
	$(BIN)/python -m pytest $(ARGS)

# LangGraph's dev server (the benchmark's fourth column) gets a virtualenv of its own: langgraph-api
# pins jsonschema-rs below what the test extra's schemathesis needs, so they cannot share one.
LANGGRAPH_VENV ?= .venv-langgraph

$(LANGGRAPH_VENV)/bin/langgraph:
	$(PYTHON) -m venv $(LANGGRAPH_VENV)
	$(LANGGRAPH_VENV)/bin/python -m pip install -q 'langgraph-cli[inmem]>=0.4.40,<0.5'

bench: $(BIN)/python $(LANGGRAPH_VENV)/bin/langgraph
	$(BIN)/python -m pip install -q -e '.[server,bench]'
	$(BIN)/python -m bench $(ARGS)
