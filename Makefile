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

# Tables 4/5 (OpenMMLab: SSD300 / PSPNet with CacimHook). mmcv is built once per machine (cached wheel).
.PHONY: openmmlab table4 table5
openmmlab: setup
	scripts/setup_openmmlab.sh $(VPY)

table4 table5: openmmlab
	$(VPY) -m benchmarks.openmmlab.run $@ --scale $(SCALE) $(if $(DATA),--data $(DATA))
	$(VPY) -m tables.render $@ --scale $(SCALE)
