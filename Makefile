# Every target creates .venv on first use and reuses it while pyproject.toml is unchanged.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= outputs/demo

.PHONY: venv demo test test-slow bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The main job on the embedded default: offline digits, local storage, sqlite MLflow.
demo: $(STAMP)
	$(BIN)/ganforge ingest digits --output $(DEMO_DIR)/datasets/digits --image-size 32
	$(BIN)/ganforge datasets show $(DEMO_DIR)/datasets/digits --grid $(DEMO_DIR)/digits-grid.png

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
