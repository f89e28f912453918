# servewatch: `make run` trains the demo model (when the registry has none) and serves it;
# `make test` runs the whole suite. Both create and reuse .venv in the repo root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
REGISTRY ?= registry
STAMP := $(VENV)/.installed

.PHONY: install run train-demo serve test lint format bench fuzz soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the deep extra's torch: this exact CPU build first (a looser requirement pulls CUDA, GBs)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

train-demo: install
	@if [ -z "$$(ls -d $(REGISTRY)/flights/[0-9]* 2>/dev/null)" ]; then \
		$(BIN)/servewatch train --config training/configs/flights.yaml --registry $(REGISTRY); \
	else echo "registry $(REGISTRY) already holds the flights model; skipping training"; fi

run: train-demo
	$(BIN)/servewatch serve --registry $(REGISTRY)

test: lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check core predlog training service monitoring servewatch
	$(BIN)/mypy

format: install
	$(BIN)/ruff format core predlog training service monitoring servewatch tests bench
	$(BIN)/ruff check --fix .

# Needs wrk (Debian: apt-get install wrk). The side-by-side run installs MLServer and BentoML in
# their own venvs under .bench-venvs/ on first use (FLAML too). About 100 minutes in all on an idle
# 2-core machine (bench.quality several hours since issue 32, bench.threshold ~15; the first run also trains
# one flights model per family into .bench-registry/, about 10 minutes more).
bench: install
	$(BIN)/python -m bench.compare
	$(BIN)/python -m bench.serving
	# issue 16: tree models compiled (per-family table above; peers on a forest and an HGB model)
	$(BIN)/python -m bench.compare --model flights-forest --peers-only --connections 16,64
	$(BIN)/python -m bench.compare --model flights-hgb --peers-only --connections 16,64
	$(BIN)/python -m bench.tree_exactness
	$(BIN)/python -m bench.readiness  # start-up to ready per tree family, compiled or not
	$(BIN)/python -m bench.durability
	$(BIN)/python -m bench.monitoring
	$(BIN)/python -m bench.drift_rates  # issue 33: drift false alarms and detection per window size
	$(BIN)/python -m bench.alerts  # issue 33: false alarms and detection of the performance rules per window size
	$(BIN)/python -m bench.report
	# issue 17: the prediction log with replicas writing to one PostgreSQL, and at 1M/10M rows
	# (needs PostgreSQL at 127.0.0.1:5432; creates and drops sw_bench_log_* databases, ~6 GB at 10M)
	$(BIN)/python -m bench.log_scale writers
	$(BIN)/python -m bench.log_scale queries
	$(BIN)/python -m bench.oip  # issue 18: /v2 (Open Inference Protocol) beside /v1
	$(BIN)/python -m bench.deep  # the deep family's serving cost and each fairness mitigation
	nice -n 19 $(BIN)/python -m bench.threshold  # issue 19: decision thresholds, flights May-December
	# issues 19, 32: model quality against FLAML (own venv, .bench-venvs/flaml) and untuned HGB,
	# LightGBM and XGBoost on twelve data sets, three seeds, at 60 and 300 s: several hours
	$(BIN)/python -m bench.quality --budgets 60,300 --seeds 0,1,2
	nice -n 19 $(BIN)/python -m bench.copies  # issue 34: copied rows and the test score (~3 min)

# The fuzzing of `make test` (schemathesis per operation and stateful, hostile inputs over HTTP,
# property tests of the decoders, validation and label coercion) with 500 examples per operation
# instead of 15 (hostile inputs: 10,000 requests, about 1.5 minutes; each property 2,500 cases,
# about 1.3 minutes).
fuzz: install
	SERVEWATCH_FUZZ_EXAMPLES=500 $(BIN)/pytest tests/service/test_fuzz.py tests/service/test_properties.py

# Several minutes of load with --workers 2, then a graceful stop; prints the reliability table row.
soak: install
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
