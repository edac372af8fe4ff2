# The README's two commands: `make demo` (set up + run the main job) and `make test`.
# Both create .venv and install what they need on first use (torch 2.13.0 CPU build first).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Real data: PneumoniaMNIST + Kermany X-rays beside the checkout (override: make demo DATA=/path)
DATA   ?= $(abspath ../shared/data)
OUT    ?= results/demo
export CXR_DATA_DIR ?= $(DATA)

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[convert,dev]'
	touch $@

demo: setup
	$(BIN)/python -m converters evaluate --data $(DATA)

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf dist results .pytest_cache
