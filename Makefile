# cacim: `make table3` (sets itself up) and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.cacim-installed
SCALE ?= proxy
DATA ?=

.PHONY: setup test lint bench

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(VPY) -m pytest -q

lint: setup
	$(VPY) -m ruff check .

bench: setup
	$(VPY) -m benchmarks.bench

# Classification tables (benchmarks/experiments/*.py), then their rendering (tables/out/<name>.md/.tex/.csv).
# make table3 SCALE=paper DATA=/data/imagenet [WEIGHTS=dir] [METHODS=lloyd,uniform] [PLUGIN=my_module]
CLASSIFICATION_TABLES := table1 table2 table3 delta
.PHONY: $(CLASSIFICATION_TABLES)
$(CLASSIFICATION_TABLES): setup
	$(VPY) -m benchmarks run $@ --scale $(SCALE) $(if $(DATA),--data $(DATA)) $(if $(WEIGHTS),--weights $(WEIGHTS)) \
		$(if $(METHODS),--methods $(METHODS)) $(if $(PLUGIN),--plugin $(PLUGIN))
	$(VPY) -m tables.render $@ $(if $(wildcard tables/specs/$@_ptq.py),$@_ptq) --scale $(SCALE)

.PHONY: robustness
# Accuracy vs test-time noise and vs ADC bits (docs/beyond.md); figures/out/robustness*.png/.pdf
robustness: setup
	$(VPY) -m benchmarks run robustness --scale $(SCALE) $(if $(DATA),--data $(DATA))
	$(VPY) -m figures.robustness --scale $(SCALE)
