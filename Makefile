# Two entry points, each sets itself up first:
#   make train   -> install into .venv, train a model on the bundled MNIST, print test accuracy
#   make test    -> install into .venv (with test extras), run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RECIPE ?= mlp-sgd

.PHONY: setup train test test-slow bench clean

$(BIN)/scratchnet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

setup: $(BIN)/scratchnet

train: setup
	$(BIN)/scratchnet train $(RECIPE)

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
