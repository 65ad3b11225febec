# Everything a fresh machine needs: `make demo` and `make test` install first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench bench-scale bench-gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m clusterbench

test: install
	bash scripts/ensure_chromium.sh
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow (tests/e2e/ and the few > 2 s elsewhere).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check clusterbench tests scripts
	$(BIN)/ruff format --check clusterbench tests scripts

bench: install
	$(BIN)/python -m clusterbench perf

# IVF kNN recall/time and kNN + k-means at 1M x 384, C = 1000 (README: A million rows).
bench-scale: install
	$(BIN)/python -m clusterbench perf scale
	$(BIN)/python -m clusterbench perf distributed

# Every GPU measurement in one run, <= ~8 minutes (README: GPU); stops with one line without CUDA.
bench-gpu: install
	$(BIN)/python -m clusterbench.perf.gpu

clean:
	rm -rf $(VENV) outputs multirun .cache
