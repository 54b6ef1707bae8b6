# distmeta: two commands, `make train` and `make test`; each sets itself up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= configs/sinusoid_maml.yaml
ARGS   ?=
# Ray started here binds only the loopback interface.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: setup test train bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

train: $(STAMP)
	$(BIN)/distmeta train $(CONFIG) $(ARGS)

bench: $(STAMP)
	$(BIN)/distmeta bench --out bench.json

lint: $(STAMP)
	$(BIN)/ruff check distmeta tests

clean:
	rm -rf $(VENV) runs mlruns mlflow.db .pytest_cache bench.json
