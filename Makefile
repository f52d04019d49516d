# clip_assets: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)

.PHONY: install demo test test-ray test-fast dev bench clean validate e2e

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

## the Ray executor's tests, with the optional extra [ray] installed into the venv: one module per pytest process
## (each starts its own cluster on fixed ports); CI runs this after `make test`
RAY_STAMP := $(VENV)/.installed-ray
RAY_TESTS := $(sort $(shell grep -rlE --include='test_*.py' 'own_cluster|import_or_skip."ray"' tests))

$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,ray]'
	touch $(RAY_STAMP)

test-ray: $(RAY_STAMP)
	@test -n "$(RAY_TESTS)" || { echo "no Ray test modules found under tests/"; exit 1; }
	$(PY) -c 'import ray, ray.data; print("ray", ray.__version__)'
	@failed=""; for m in $(RAY_TESTS); do echo "== $$m"; \
	  CLIP_ASSETS_REQUIRE_RAY=1 $(PY) -m pytest -q -rs --timeout=900 -p no:cacheprovider $$m || failed="$$failed $$m"; \
	done; test -z "$$failed" || { echo "Ray test modules failed:$$failed"; exit 1; }

## the Dagster UI on http://127.0.0.1:3000
dev: $(STAMP)
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## load the code location the way `dagster dev` does, without serving it (isolated, empty instance)
validate: $(STAMP)
	d=$$(mktemp -d) && DAGSTER_HOME=$$d $(VENV)/bin/dagster definitions validate -w workspace.yaml; \
	rc=$$?; rm -rf "$$d"; exit $$rc

## the real-browser test alone: apt-installs chromium + chromium-driver once, screenshots in artifacts/e2e/
e2e: $(STAMP)
	$(PY) -m pytest -q -s --timeout=900 -m browser tests/e2e

bench: $(STAMP)
	$(PY) bench/bench_ingest.py

clean:
	rm -rf data/warehouse data/clip_assets.duckdb data/dagster
