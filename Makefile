# CityTwin: `make demo` and `make test` each do all set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY_STAMP   := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck pytest bench clean

setup: $(PY_STAMP) $(NODE_STAMP)

$(PY_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,mqtt,postgres,nats,redis,osm,dask]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(BIN)/twin demo

lint: $(PY_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(PY_STAMP)
	$(BIN)/mypy

# pytest exits 5 when no test was collected; that is not a failure of the suite.
pytest: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

test: lint typecheck pytest

# Benchmarks print tables and write bench/RESULTS.md (ingest needs a few minutes for cjio).
bench: setup
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/networks.py
	$(BIN)/python bench/feeds.py
	$(BIN)/python bench/api.py
	$(BIN)/python bench/viewer.py
	$(BIN)/python bench/tiles.py

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache .pytest_cache out artifacts
