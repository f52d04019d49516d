# clip_assets: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)

.PHONY: install demo test test-fast dev bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## synthetic drops -> every asset -> summary (uses ./data; CLIP_ASSETS_HOME overrides)
demo: $(STAMP)
	$(VENV)/bin/clip-assets demo

## the whole test suite (what CI runs)
test: $(STAMP)
	$(PY) -m pytest -q --timeout=900

## the Dagster UI on http://127.0.0.1:3000
dev: $(STAMP)
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: $(STAMP)
	$(PY) bench/bench_ingest.py

clean:
	rm -rf data/warehouse data/clip_assets.duckdb data/dagster
