# Everything a fresh machine needs: `make demo` and `make test` install first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m clusterbench

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check clusterbench tests scripts
	$(BIN)/ruff format --check clusterbench tests scripts

bench: install
	$(BIN)/python -m clusterbench.perf

clean:
	rm -rf $(VENV) outputs multirun .cache
