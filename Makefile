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

ANCHORS := .anchors
ANCHOR_PINS := higher==0.2.1 torchopt==0.7.3 optree==0.20.0 graphviz==0.21

.PHONY: setup constraints anchors test train bench lint clean

setup: $(STAMP)

# pyproject.toml declares compatible ranges; constraints.txt pins what this repository is
# tested with, so every setup installs the same versions.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,tune]'
	touch $(STAMP)

# Pin the versions installed now (after changing a range in pyproject.toml).
constraints: $(STAMP)
	{ head -2 constraints.txt; $(BIN)/pip freeze --exclude-editable | grep -v '^distmeta'; } > constraints.new
	mv constraints.new constraints.txt

# The libraries the benchmarks compare against, in a folder of their own (never in .venv):
# benchmarks/anchors.py puts it on sys.path only while it imports them.
anchors: $(ANCHORS)/.installed

$(ANCHORS)/.installed: Makefile $(STAMP)
	rm -rf $(ANCHORS)
	$(BIN)/pip install --quiet --no-deps --target $(ANCHORS) $(ANCHOR_PINS)
	touch $@

test: $(STAMP) $(ANCHORS)/.installed
	DISTMETA_BENCH_ANCHORS=$(CURDIR)/$(ANCHORS) $(BIN)/python -m pytest -q -p no:cacheprovider

train: $(STAMP)
	$(BIN)/distmeta train $(CONFIG) $(ARGS)

bench: $(STAMP) $(ANCHORS)/.installed
	DISTMETA_BENCH_ANCHORS=$(CURDIR)/$(ANCHORS) $(BIN)/python -m benchmarks.run --out bench.json $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check distmeta tests benchmarks

clean:
	rm -rf $(VENV) $(ANCHORS) runs mlruns mlflow.db .pytest_cache bench.json bench-tta.png
