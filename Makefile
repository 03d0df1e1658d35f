# Every target creates .venv on first use and reuses it while pyproject.toml is unchanged.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= outputs/demo

.PHONY: venv demo golden test test-slow bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The main job on the embedded default: the whole KFP pipeline through kfp.local on offline digits,
# local storage, sqlite MLflow (ingest -> train -> evaluate || audit -> gate -> register).
demo: $(STAMP)
	$(BIN)/ganforge pipeline run --local --dir $(DEMO_DIR)

# Regenerate the golden compiled pipeline (tests/golden/gan_pipeline.yaml) after a deliberate change.
golden: $(STAMP)
	$(BIN)/python -m ganforge.pipeline.golden

# Unit and integration tests; `slow` quality checks run only with `make test-slow`.
test: $(STAMP)
	$(BIN)/pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/pytest -m slow -q

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) outputs .pytest_cache
