# cacim: `make table3` (sets itself up) and `make test` are the two commands a newcomer needs.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.cacim-installed
SCALE ?= proxy
DATA ?=
# proxy scale: two worker processes, one torch thread each (faster than one process with two threads), and
# channels_last training (oneDNN's NHWC kernels: 1.24-1.29x the cells per CPU-hour of the narrow proxy nets
# on this CPU, `make bench-cell`'s --paths fp32,channels_last) for the classification tables (the torch
# loop; OpenMMLab and sentence cells refuse it); CHANNELS_LAST= (empty) trains NCHW
WORKERS ?= $(if $(filter proxy,$(SCALE)),2)
CHANNELS_LAST ?= $(if $(filter proxy,$(SCALE)),1)

.PHONY: core setup test test-fast lint typecheck bench bench-cell

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

# One pytest process per core (pytest-xdist): the suite's CLI runs and fault injections are single-threaded.
test: setup
	$(VPY) -m pytest -q -n auto

# The edit loop: everything but the tests marked slow (whole CLI runs, fault injection) or openmmlab.
test-fast: core
	$(VPY) -m pytest -q -n auto -m "not slow and not openmmlab"

lint: core
	$(VPY) -m ruff check .
	$(VPY) -m ruff format --check .

typecheck: core
	$(VPY) -m mypy

bench: core
	$(VPY) -m benchmarks.bench

# One real proxy cell per network of Tables 1 and 3 broken into its parts (CPU-s, 1 torch thread) and the
# cells per CPU-hour they make (benchmarks/cellbench.py; about 3 min on the 2-core machine)
bench-cell: core
	$(VPY) -m benchmarks.cellbench

# Every table and figure result set runs through one CLI (`python -m benchmarks run <name>`), then its rendering
# (tables/out/<scale>/<name>.md/.tex/.csv). Options, for every table:
# make table3 SCALE=paper DATA=/data/imagenet [WEIGHTS=dir] [METHODS=lloyd,mine] [PLUGIN=my_module|file.py]
#             [SEEDS=0,1,2] [WORKERS=2] [FORCE=1] [RERUN_STALE=1] [MAX_SEEDS=10]
# MAX_SEEDS=N: adaptive seeds, a two-stage design (benchmarks/two_stage.py): after the first stage (SEEDS or
# the scale's), each claim's two arms get the seeds its first-stage SD calls for, at most N. At proxy scale
# the tables with claims (TWO_STAGE_TABLES) do this by default, up to PROXY_MAX_SEEDS; MAX_SEEDS=off: the
# first stage only. SEED_RULE=fixed (make's default): every tested claim's arms to the cap, tested by the
# paired t on all seeds; SEED_RULE=stein: Stein's design (n from the first-stage SD; `--seed-rule`).
RUN = $(VPY) -m benchmarks run
PLUGIN_FLAGS = $(if $(METHODS),--methods $(METHODS)) $(foreach p,$(subst $(comma), ,$(PLUGIN)),--plugin $(p))
RUN_FLAGS = --scale $(SCALE) $(if $(DATA),--data $(DATA)) $(if $(WEIGHTS),--weights $(WEIGHTS)) $(PLUGIN_FLAGS) \
	$(if $(SEEDS),--seeds $(SEEDS)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(FORCE),--force) \
	$(if $(RERUN_STALE),--rerun-stale) $(if $(filter-out off,$(MAX_SEEDS)),$(call two_stage,$(MAX_SEEDS)))
comma := ,
CLASSIFICATION_TABLES := table1 table2 table3 delta
TWO_STAGE_TABLES := table1 table3
PROXY_MAX_SEEDS := 8
SEED_RULE ?= fixed
two_stage = --two-stage $(1) --seed-rule $(SEED_RULE)
# the default cap, where none was given: proxy scale, a table with claims, the scale's own first stage
default_cap = $(if $(or $(MAX_SEEDS),$(SEEDS)),,$(if $(and $(filter proxy,$(SCALE)),$(filter $(1),$(TWO_STAGE_TABLES))),$(call two_stage,$(PROXY_MAX_SEEDS))))
# --channels-last for an experiment the torch loop trains (OpenMMLab and sentence cells refuse it), so that
# compare's and sensitivity's new cells train as the table's own did
channels_last = $(if $(and $(CHANNELS_LAST),$(filter-out table4 table4_one_stage table5 transformers,$(1))),--channels-last)
.PHONY: $(CLASSIFICATION_TABLES)
$(CLASSIFICATION_TABLES): core
	$(RUN) $@ $(RUN_FLAGS) $(call channels_last,$@) $(call default_cap,$@)
	$(VPY) -m tables.render $@ $(foreach v,ptq control,$(if $(wildcard tables/specs/$@_$(v).py),$@_$(v))) --scale $(SCALE) $(if $(MARGIN),--margin $(MARGIN))

# Recipe sensitivity of a table's claims (benchmarks.experiments.SENSITIVITY): its claim rows and control
# rerun with the fine-tune 4x as long and on a second synthetic-data draw, then each claim's verdict side by
# side ("recipe-dependent" where they differ): make sensitivity TABLE=table1 [SCALE=proxy]
SENSITIVITY_OF = $(shell $(VPY) -c "from benchmarks.experiments import SENSITIVITY as S; \
	print(*S.get('$(TABLE)', {}).values())" 2>/dev/null)
.PHONY: sensitivity
sensitivity: core
	$(if $(SENSITIVITY_OF),,$(error no sensitivity variants for TABLE=$(TABLE); see SENSITIVITY in benchmarks/experiments))
	$(RUN) $(TABLE) $(RUN_FLAGS) $(call channels_last,$(TABLE))
	$(foreach e,$(SENSITIVITY_OF),$(RUN) $(e) $(RUN_FLAGS) $(call channels_last,$(TABLE)) &&) true
	$(VPY) -m tables.sensitivity $(TABLE) --scale $(SCALE) $(if $(MARGIN),--margin $(MARGIN))

# Compare a quantizer against baselines (paired by seed, 95% CIs); runs the missing cells first:
# make compare TABLE=table3 METHOD=mine AGAINST=lloyd,uniform PLUGIN=my_module [SEEDS=0,1,2,3,4] [MARGIN=0.5]
TABLE ?= table3
.PHONY: compare
compare: $(if $(filter table4 table4_one_stage table5,$(TABLE)),setup,core)
	$(RUN) $(TABLE) $(RUN_FLAGS) $(call channels_last,$(TABLE)) --methods $(METHOD),$(AGAINST)
	$(VPY) -m benchmarks compare $(TABLE) --method $(METHOD) --against $(AGAINST) --scale $(SCALE) \
		$(if $(MARGIN),--margin $(MARGIN))

.PHONY: robustness
# Accuracy vs test-time noise, ADC bits, stuck devices, crossbar tile size, IR drop x tile size and DAC bits
# (README: Beyond the paper, Device models);
# figures/out/<scale>/robustness*.png/.pdf and robustness.csv
robustness: core
	$(RUN) robustness $(RUN_FLAGS)
	$(VPY) -m figures.robustness --scale $(SCALE)

.PHONY: transformers
# The transformer track (README: Transformer track): all-MiniLM-L6-v2 with every Linear/Embedding quantized,
# PTQ + distillation + device models; tables/out/<scale>/transformers.md and figures/out/<scale>/transformers.*
transformers: core
	$(RUN) transformers $(RUN_FLAGS)
	$(VPY) -m tables.render transformers --scale $(SCALE) $(if $(MARGIN),--margin $(MARGIN))
	$(VPY) -m figures.transformers --scale $(SCALE)

.PHONY: drift
# Accuracy vs time after programming on PCM (README: Device models): figures/out/<scale>/drift.png/.pdf and
# tables/out/<scale>/drift.md
drift: core
	$(RUN) drift $(RUN_FLAGS)
	$(VPY) -m figures.drift --scale $(SCALE)

# ---- figures and the section 5.1 table: read the results store, never train (CHECKPOINT=, CONDUCTANCES=,
# METHODS= the quantizers drawn, PLUGIN= a module or file registering one)
CHECKPOINT ?=
CONDUCTANCES ?=
FIGURE_ARGS = --scale $(SCALE) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) \
	$(if $(CONDUCTANCES),--conductances $(CONDUCTANCES)) $(PLUGIN_FLAGS)
.PHONY: figures figure2 figure3 figure4 digital_cost fig3-results fig4b-results figures-results

# Everything the figures read, at $(SCALE) (resumable: finished cells are skipped). On a fresh machine
# `make figures-results figures` is the whole path.
figures-results: table3 fig3-results table4 fig4b-results

figures: digital_cost
	$(VPY) -m figures all $(FIGURE_ARGS)

figure2 figure3 figure4: core
	$(VPY) -m figures $(subst figure,fig,$@) $(FIGURE_ARGS)

digital_cost: core
	$(VPY) -m tables.digital_cost --scale $(SCALE) $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(PLUGIN_FLAGS)

# the trained cells Figures 3 and 4(b) read (Table 3 and Table 4 cells come from `make table3 table4`)
fig3-results: delta
	$(RUN) fig3 $(RUN_FLAGS)

# fig4b: ResNet-18b (torch loop) and SSD (mmengine, fine-tuned from Table 4's float SSD) in one experiment;
# at paper scale DATA= must hold both the ImageNet folders and VOCdevkit/
fig4b-results: setup
	CONDUCTANCES=$(CONDUCTANCES) $(RUN) fig4b $(RUN_FLAGS)

# Tables 4/5 (OpenMMLab: SSD300 / PSPNet with CacimHook); `setup` installs the stack (docs/openmmlab.md).
# SSD_READING picks Table 4's reading of the paper: two-stage (default: float SSD, then each quantized cell
# fine-tunes from it) or one-stage (each quantized cell trains from the ImageNet VGG16 backbone; experiment
# table4_one_stage, its own records and table).
SSD_READING ?= two-stage
SSD_READINGS := two-stage one-stage
$(if $(filter-out $(SSD_READINGS),$(SSD_READING)),$(error SSD_READING=$(SSD_READING) is not a reading of \
	Table 4; choose one of: $(SSD_READINGS)))
TABLE4 := table4$(if $(filter one-stage,$(SSD_READING)),_one_stage)
.PHONY: table4 table5
table4: setup
	$(RUN) $(TABLE4) $(RUN_FLAGS)
	$(VPY) -m tables.render $(TABLE4) --scale $(SCALE) $(if $(MARGIN),--margin $(MARGIN))
table5: setup
	$(RUN) $@ $(RUN_FLAGS)
	$(VPY) -m tables.render $@ --scale $(SCALE) $(if $(MARGIN),--margin $(MARGIN))
