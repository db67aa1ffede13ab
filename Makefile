# Two entry points, each sets itself up first:
#   make train   -> install into .venv, train the mlp recipe on the bundled MNIST, print test accuracy
#   make test    -> install into .venv (with test extras), run the test suite and a benchmark smoke run
#   make bench   -> the full benchmark report (bench/results/<cpu>/report.md and .png), long
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RECIPE ?= mlp

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
	$(BIN)/python -m pytest -q bench --benchmark-disable -p no:cacheprovider  # benchmark smoke: each runs once, untimed

bench: setup
	$(BIN)/python -m bench.report

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
