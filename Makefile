# The two commands of the README: `make demo` and `make test`. Both create or refresh .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME := $(abspath dagster_home)
# CI (CI=true) also runs the tests marked slow (real `dagster dev`, real browser).
PYTEST_MARKS := $(if $(filter true 1,$(CI)),-m "slow or not slow",)

.PHONY: venv demo test test-all test-newest-dagster lint ui bench soak clean

# Each step says what it does first; the big install shows pip's own progress (it takes minutes the first time).
$(STAMP): pyproject.toml
	@echo "== [1/3] creating the virtual environment $(VENV) with $(PYTHON) (seconds; skipped when it exists)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "== [2/3] upgrading pip in $(VENV) (seconds)"
	$(BIN)/pip install -q --upgrade pip
	@echo "== [3/3] installing mmfs and its pipeline, deploy, test and ray extras into $(VENV): Dagster, Lance, torch, Ray,"
	@echo "   the model libraries (a few minutes the first time, seconds afterwards; pip lists what it installs)"
	$(BIN)/pip install --progress-bar on -e '.[pipeline,deploy,test,ray]'
	@touch $(STAMP)
	@echo "== $(VENV) is ready: \`source $(VENV)/bin/activate\` puts mmfs, dagster, pytest and torchrun on your PATH"

venv: $(STAMP)

demo: venv
	$(BIN)/mmfs demo

test: venv
	$(BIN)/pytest $(PYTEST_MARKS) $(PYTEST_ARGS)

# ruff (lint + import order) and mypy, both configured in pyproject.toml; CI runs it before the tests
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

# The newest Dagster of the supported range (pyproject: dagster>=1.13,<1.14) in a venv of its own, without
# the deploy integrations (their newest releases pin an older 1.13.x): the tests of everything MMFS does
# with Dagster (instance, CLI runs and their pools, sensors, checks, `dagster dev` end to end). CI runs it.
NEWEST := .venv-newest-dagster
NEWEST_TESTS := tests/test_instance.py tests/test_e2e_dagster_dev.py tests/test_staleness.py tests/test_sensor.py \
	tests/test_pipeline.py tests/test_cli.py tests/test_launch_ui.py tests/test_store_ops.py
test-newest-dagster:
	@echo "== a venv with the newest Dagster 1.13.x ($(NEWEST), minutes the first time)"
	@test -x $(NEWEST)/bin/python || $(PYTHON) -m venv $(NEWEST)
	$(NEWEST)/bin/pip install -q --upgrade pip
	$(NEWEST)/bin/pip install --progress-bar on --upgrade --upgrade-strategy only-if-needed -e '.[pipeline,test]' 'dagster>=1.13,<1.14'
	@$(NEWEST)/bin/python -c "import dagster, dagster_webserver; print('== testing with dagster', dagster.__version__, 'and dagster-webserver', dagster_webserver.__version__)"
	$(NEWEST)/bin/pytest -m "slow or not slow" $(NEWEST_TESTS) $(PYTEST_ARGS)

test-all: venv
	$(BIN)/pytest -m "slow or not slow" $(PYTEST_ARGS)

# Ctrl-C stops it cleanly: the launcher shuts dagster dev down and exits 0 (no "Aborted!", no make error)
ui: venv
	$(BIN)/python -m mmfs_assets.launch_ui

bench: venv
	@echo "== installing the bench extra (webdataset, lancedb) into $(VENV)"
	$(BIN)/pip install -e '.[pipeline,deploy,test,bench]'
	$(BIN)/python bench/ingest_metadata.py
	$(BIN)/python bench/features.py
	$(BIN)/python bench/gpu.py --videos 48
	$(BIN)/python bench/loader.py
	$(BIN)/python bench/search.py
	$(BIN)/python bench/writers.py
	$(BIN)/python bench/sensor_tick.py
	$(BIN)/python bench/loader_s3.py
	$(BIN)/python bench/pool_wait.py
	$(BIN)/python bench/drop_latency.py

# fifty drops through the sensor and the automation, table and drops on an S3 server (about half an hour)
soak: venv
	$(BIN)/python bench/soak.py

clean:
	rm -rf data dagster_home/storage dagster_home/history dagster_home/logs dagster_home/schedules
