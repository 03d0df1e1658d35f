# Every target creates .venv on first use and reuses it while pyproject.toml is unchanged.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= outputs/demo
DEMO_FLAGS ?=

.PHONY: venv demo golden test test-slow bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The main job on the embedded default: the whole KFP pipeline through kfp.local on offline digits,
# local storage, sqlite MLflow (ingest -> train -> evaluate || audit -> gate -> register). One line per
# step; KFP's executor logs go to $(DEMO_DIR)/logs/ (DEMO_FLAGS=--verbose prints them too).
demo: $(STAMP)
	$(BIN)/ganforge pipeline run --local --dir $(DEMO_DIR) $(DEMO_FLAGS)

# Regenerate the golden compiled pipeline (tests/golden/gan_pipeline.yaml) after a deliberate change.
golden: $(STAMP)
	$(BIN)/python -m tests.golden

# Unit and integration tests; `slow` quality checks run only with `make test-slow`. Two workers, a test
# file each at a time (module fixtures stay in one process), one torch thread each: much of the suite
# waits on servers and subprocesses, so two files at once cut CI's wall time about 1.5x on 2 cores.
TEST_WORKERS ?= 2
test: $(STAMP)
	bash .ci/system-deps
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/pytest -m "not slow" -q -n $(TEST_WORKERS) --dist loadfile

test-slow: $(STAMP)
	$(BIN)/pytest -m slow -q

bench: $(STAMP)
	$(BIN)/python benchmarks/ingest.py

# Ruff over the code and tests, then mypy over src/ (configured in pyproject.toml's [tool.mypy]; run from here).
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) outputs .pytest_cache

# --- images (issue 8): never part of `make test`; docker/build-local.sh holds the recipe ---------------
IMAGE ?= ganforge:latest
IMAGE_CUDA ?= ganforge:latest-cuda
REGISTRY ?=

.PHONY: image image-cuda push lock

# CPU image (debootstrap base when no registry is reachable, local wheelhouse, smoke test in the container).
image:
	IMAGE=$(IMAGE) docker/build-local.sh

image-cuda:
	IMAGE=$(IMAGE_CUDA) docker/build-local.sh --cuda

# make push REGISTRY=registry.example.com/ml: tags both images under REGISTRY and pushes what exists.
push:
	@test -n "$(REGISTRY)" || { echo "error: REGISTRY is empty; run make push REGISTRY=host[:port]/path" >&2; exit 2; }
	@pushed=0; for img in $(IMAGE) $(IMAGE_CUDA); do \
	  if docker image inspect $$img >/dev/null 2>&1; then \
	    docker tag $$img $(REGISTRY)/$$img && docker push $(REGISTRY)/$$img && pushed=1 || exit 1; fi; done; \
	  test $$pushed = 1 || { echo "error: no image $(IMAGE) or $(IMAGE_CUDA) to push; run make image first" >&2; exit 2; }

# Re-pin docker/requirements.lock to the venv after a dependency change.
lock: $(STAMP)
	$(BIN)/python docker/lock.py > docker/requirements.lock
