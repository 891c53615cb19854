# cacim: `make table3` (sets itself up) and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.cacim-installed
SCALE ?= proxy
DATA ?=

.PHONY: core setup test lint bench

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The OpenMMLab stack (Tables 4/5): mmcv is built from source once per machine and its wheel cached in
# ~/.cache/cacim/wheels (about 10 min on an idle 2-core machine the first time, 52 min measured on a
# loaded one; seconds after that).
OMM_STAMP := $(VENV)/.openmmlab-installed
$(OMM_STAMP): $(STAMP) scripts/setup_openmmlab.sh scripts/build_mmcv.sh
	scripts/setup_openmmlab.sh $(VPY)
	touch $(OMM_STAMP)

# `core`: the library and classification suite only (Tables 1-3, figures); `setup`: plus OpenMMLab.
core: $(STAMP)
setup: $(STAMP) $(OMM_STAMP)

test: setup
	$(VPY) -m pytest -q

lint: core
	$(VPY) -m ruff check .

bench: core
	$(VPY) -m benchmarks.bench

# Classification tables (benchmarks/experiments/*.py), then their rendering (tables/out/<name>.md/.tex/.csv).
# make table3 SCALE=paper DATA=/data/imagenet [WEIGHTS=dir] [METHODS=lloyd,uniform] [PLUGIN=my_module]
CLASSIFICATION_TABLES := table1 table2 table3 delta
.PHONY: $(CLASSIFICATION_TABLES)
$(CLASSIFICATION_TABLES): core
	$(VPY) -m benchmarks run $@ --scale $(SCALE) $(if $(DATA),--data $(DATA)) $(if $(WEIGHTS),--weights $(WEIGHTS)) \
		$(if $(METHODS),--methods $(METHODS)) $(if $(PLUGIN),--plugin $(PLUGIN)) $(if $(FORCE),--force)
	$(VPY) -m tables.render $@ $(if $(wildcard tables/specs/$@_ptq.py),$@_ptq) --scale $(SCALE)

.PHONY: robustness
# Accuracy vs test-time noise and vs ADC bits (README: Beyond the paper); figures/out/robustness*.png/.pdf
robustness: core
	$(VPY) -m benchmarks run robustness --scale $(SCALE) $(if $(DATA),--data $(DATA))
	$(VPY) -m figures.robustness --scale $(SCALE)

# ---- figures and the section 5.1 table: read the results store, never train (CHECKPOINT=, CONDUCTANCES=)
CHECKPOINT ?=
CONDUCTANCES ?=
FIGURE_ARGS = --scale $(SCALE) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) \
	$(if $(CONDUCTANCES),--conductances $(CONDUCTANCES))
RUN_ARGS = --scale $(SCALE) $(if $(DATA),--data $(DATA)) --plugin figures.experiments
.PHONY: figures figure2 figure3 figure4 digital_cost fig3-results fig4b-results figures-results

# Everything the figures read, at $(SCALE) (resumable: finished cells are skipped). On a fresh machine
# `make figures-results figures` is the whole path (proxy, 2-core machine: 36 min measured with other jobs
# running; idle parts: classification 3.5 min, table4 15 min, fig4b SSD 8 min).
figures-results: table3 fig3-results table4 fig4b-results

figures: digital_cost
	$(VPY) -m figures all $(FIGURE_ARGS)

figure2 figure3 figure4: core
	$(VPY) -m figures $(subst figure,fig,$@) $(FIGURE_ARGS)

digital_cost: core
	$(VPY) -m tables.digital_cost --scale $(SCALE) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT))

# the trained cells Figures 3 and 4(b) read (Table 3 and Table 4 cells come from `make table3 table4`)
fig3-results: delta
	$(VPY) -m benchmarks run fig3 $(RUN_ARGS)

# fig4b: ResNet-18b bars (classification runner), then SSD bars (fine-tuned from Table 4's float SSD;
# at paper scale VOC_DATA= is the folder holding VOCdevkit/, DATA= the ImageNet one)
fig4b-results: setup
	CONDUCTANCES=$(CONDUCTANCES) $(VPY) -m benchmarks run fig4b $(RUN_ARGS)
	CONDUCTANCES=$(CONDUCTANCES) $(VPY) -m benchmarks.openmmlab.run fig4b --scale $(SCALE) \
		$(if $(VOC_DATA),--data $(VOC_DATA))

# Tables 4/5 (OpenMMLab: SSD300 / PSPNet with CacimHook); `setup` installs the stack (docs/openmmlab.md).
.PHONY: table4 table5
table4 table5: setup
	$(VPY) -m benchmarks.openmmlab.run $@ --scale $(SCALE) $(if $(DATA),--data $(DATA)) $(if $(FORCE),--force)
	$(VPY) -m tables.render $@ --scale $(SCALE)
