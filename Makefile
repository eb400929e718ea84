# Two doors: `make demo` (set up, then the main job) and `make test` (set up, then the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The databases: ../shared/data in this workspace, else whatever BEATWISE_DATA says.
BEATWISE_DATA ?= $(abspath ../shared/data)
export BEATWISE_DATA

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

# torch==2.13.0 first: a bare torch requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

demo: setup
	$(BIN)/beatwise demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) cache build *.egg-info
