# Kaggle image-classification pipeline. Make owns the graph (every stage output is a file, so
# finished work is skipped); Python owns the work (every recipe is one `python -m pipeline` call).
# `make all` with no CONFIG runs the embedded offline demo. `make help` lists the targets.

SHELL := /bin/bash
.DELETE_ON_ERROR:
# Fold outputs are never deleted as "intermediate"; not .SECONDARY for everything, which would stop Make from
# rebuilding a deleted file (scores.json) whose dependents (the submission) still exist.
.PRECIOUS: data/runs/%/model.safetensors data/runs/%/test.csv
.DEFAULT_GOAL := help

# Absolute paths from the Makefile's own folder, so `make -f <repo>/Makefile` works from any project folder.
ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
VENV ?= $(ROOT)/.venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

ifdef CONFIG
COMP := $(notdir $(patsubst %/,%,$(dir $(CONFIG))))
else
COMP ?= demo
CONFIG := configs/$(COMP)/baseline.yaml
endif
ifneq ($(words $(CONFIG)),1)
$(error error: CONFIG="$(CONFIG)" contains a space, which Make cannot handle in file names; rename the folder or file, or run `python -m pipeline <stage> --config "<path>"` directly)
endif
EXP := $(basename $(notdir $(CONFIG)))
SET ?=
SAMPLE ?=
TRACK ?=
SETS := $(strip $(SET) $(if $(SAMPLE),sample=$(SAMPLE)) $(if $(TRACK),tracking=$(TRACK)))
ARGS := --config $(CONFIG)$(if $(SETS), --set "$(SETS)")

# Paths mirror pipeline/core/paths.py (tests/test_make.py checks they agree).
SUFFIX := $(if $(SAMPLE),-sample$(SAMPLE))
RAW_STAMP := data/raw/$(COMP)/.complete
COMP_YAML := configs/$(COMP)/competition.yaml
PROC := data/processed/$(COMP)$(if $(SAMPLE),/sample$(SAMPLE))
RUN := data/runs/$(COMP)/$(EXP)$(SUFFIX)
SUBMISSION := submissions/$(COMP)/$(EXP)$(SUFFIX).csv
# Overrides are not files, so Make can't see them: SET is written to a stamp in the run folder, rewritten only when
# it changes, and the stages the config feeds depend on it. A changed SET re-runs them once (Python then decides what
# is current: a skipped fold is touched, so Make sees it up to date); the same SET again runs nothing.
SET_STAMP := $(if $(strip $(SET)),$(RUN)/.overrides)
LITE0 := data/weights/tf_efficientnet_lite0.safetensors
DEMO_DEPS := $(if $(filter demo,$(COMP)),$(LITE0))

# The fold count, then a seed bag's seeds (train.seeds: [42, 43, 44]), from one Python start (no torch).
FACTS := $(shell [ -x $(PY) ] && [ -f $(CONFIG) ] && $(PY) -m pipeline info $(ARGS) n_folds seeds 2>/dev/null)
NFOLDS := $(or $(firstword $(FACTS)),5)
FOLD_IDS := $(shell seq 0 $$(( $(NFOLDS) - 1 )))
# A seed bag: one model per (fold, seed) in fold<k>/seed<s>/, one Make target each.
SEEDS := $(wordlist 2,$(words $(FACTS)),$(FACTS))
fold_models = $(if $(SEEDS),$(foreach s,$(SEEDS),$(RUN)/fold$(1)/seed$(s)/model.safetensors),$(RUN)/fold$(1)/model.safetensors)
WEIGHTS := $(foreach k,$(FOLD_IDS),$(call fold_models,$(k)))
# A model target's stem: `k` (fold k) or `k/seed<s>` (member (k, s)).
stem_fold = $(firstword $(subst /seed, ,$(1)))
stem_seed = $(word 2,$(subst /seed, ,$(1)))
# train.pseudo / train.soft_labels: the sources' scores.json, so a source that re-ran sends the folds back to train
SOURCES := $(if $(shell grep -sE '^\s*(pseudo|soft_labels):' $(CONFIG)),$(shell $(PY) -m pipeline info $(ARGS) sources 2>/dev/null))
TEST_PROBS := $(foreach k,$(FOLD_IDS),$(RUN)/fold$(k)/test.csv)

# GPUS=N: one fold on N GPUs with torchrun (DDP). FOLD_GPUS=0,1 with make -j2: fold k runs alone on GPU
# FOLD_GPUS[k mod len], the natural use of Kaggle's 2xT4 for k-fold; a seed bag's member (k, s): FOLD_GPUS[(k + s) mod len].
GPUS ?=
FOLD_GPUS ?=
LAUNCH := $(if $(GPUS),$(VENV)/bin/torchrun --standalone --nproc_per_node=$(GPUS) -m pipeline,$(PY) -m pipeline)
comma := ,
empty :=
space := $(empty) $(empty)
FOLD_GPU_LIST := $(subst $(comma), ,$(FOLD_GPUS))
fold_gpu = $(if $(FOLD_GPU_LIST),CUDA_VISIBLE_DEVICES=$(word $(shell echo $$(( ($(1)) % $(words $(FOLD_GPU_LIST)) + 1 ))),$(FOLD_GPU_LIST)) )

# When this make started (simple expansion: evaluated once), so `summary` can tell what this run retrained.
ifeq ($(MAKELEVEL),0)
PIPELINE_MAKE_START := $(shell date +%s.%N)
endif
export PIPELINE_MAKE_START

# The virtualenv is a makefile Make includes, so a fresh clone builds it before anything else runs.
ifneq ($(filter-out help,$(or $(MAKECMDGOALS),help)),)
include $(INSTALLED)
endif

.PHONY: help all install download init folds train predict refit pseudo ensemble submission submit scores blend cache bench test test-fast lint paths lr-find bench-recipe bench-techniques bench-imbalance bench-scale FORCE

# A command's help line is its record's (pipeline/commands/__init__.py); other targets keep their `## ` comment.
help: ## one line per target
	@python3 $(ROOT)/pipeline/commands/make_help.py $(MAKEFILE_LIST)

install: $(INSTALLED) ## create .venv and install the pinned stack (every target does this itself)

$(INSTALLED): $(ROOT)/pyproject.toml $(ROOT)/constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(ROOT)/constraints.txt -e '$(ROOT)[dev,demo]'
	echo "# installed $$(date -u +%FT%TZ)" > $@

all: $(SUBMISSION) ## the whole chain: download, init, folds, train, predict, ensemble, submission
	@$(PY) -m pipeline summary $(ARGS)

download: $(RAW_STAMP)
$(RAW_STAMP):
	$(PY) -m pipeline download --comp $(COMP)

init:
	$(PY) -m pipeline init --comp $(COMP)
configs/%/competition.yaml: | data/raw/%/.complete
	$(PY) -m pipeline init --comp $*

folds: $(PROC)/folds.csv
$(PROC)/folds.csv: $(COMP_YAML) | $(RAW_STAMP)
	$(PY) -m pipeline folds $(ARGS)

$(LITE0):
	$(PY) -m pipeline weights

# A CONFIG that does not exist: our one-line error (what to run), not Make's "No rule to make target". init may
# write it (the demo's baseline.yaml) while making competition.yaml.
$(CONFIG): | $(COMP_YAML)
	@test -f $@ || $(PY) -m pipeline summary $(ARGS)

# RUNNER=kaggle: each unit (fold, or fold and seed) trains in a Kaggle notebook and comes home checked
# (pipeline.kaggle.remote); a plain make pushes up to kaggle.sessions notebooks at once, two units per T4 x2 notebook
# (kaggle.units_per_notebook). RUNNER=local (default): here.
RUNNER ?= local
ifeq ($(filter local kaggle,$(RUNNER)),)
$(error error: RUNNER=$(RUNNER): use RUNNER=local (train here, the default) or RUNNER=kaggle (Kaggle notebooks))
endif
train_unit = $(if $(filter kaggle,$(RUNNER)),$(PY) -m pipeline remote-train $(ARGS)$(BUNDLE_FLAGS),$(call fold_gpu,$(1)$(if $(2), + $(2)))$(LAUNCH) train $(ARGS)) --fold $(1)$(if $(2), --seed $(2))

train: $(WEIGHTS)
$(RUN)/fold%/model.safetensors: $(PROC)/folds.csv $(CONFIG) $(COMP_YAML) $(DEMO_DEPS) $(SOURCES) $(SET_STAMP)
	$(call train_unit,$(call stem_fold,$*),$(call stem_seed,$*))

ifneq ($(SET_STAMP),)
$(SET_STAMP): FORCE
	@mkdir -p $(@D) && new='$(subst ','\'',$(strip $(SET)))' && { [ "$$(cat $@ 2>/dev/null)" = "$$new" ] || printf '%s\n' "$$new" > $@; }
endif

predict: $(TEST_PROBS)
.SECONDEXPANSION:
$(RUN)/fold%/test.csv: $$(call fold_models,$$*) $(CONFIG) $(SET_STAMP)
	$(call fold_gpu,$*)$(LAUNCH) predict $(ARGS) --fold $*

refit: $(RUN)/refit/test.csv ## one model on every training row (the folds' median best epoch), test predictions
$(RUN)/refit/model.safetensors: $(WEIGHTS) $(CONFIG) $(SET_STAMP)
	$(LAUNCH) train $(ARGS) --fold refit
$(RUN)/refit/test.csv: $(RUN)/refit/model.safetensors $(CONFIG) $(SET_STAMP)
	$(LAUNCH) predict $(ARGS) --fold refit

# Pseudo-labels: FROM=<experiment or blend> whose test predictions label; NAME= names the new experiment.
pseudo:
	@new=$$($(PY) -m pipeline pseudo $(ARGS)$(if $(FROM), --from $(FROM))$(if $(NAME), --name $(NAME))) && \
	  $(MAKE) --no-print-directory -f $(ROOT)/Makefile all CONFIG=$$new

lr-find: $(PROC)/folds.csv $(DEMO_DEPS)
	$(PY) -m pipeline lr-find $(ARGS)

ensemble: $(RUN)/scores.json
$(RUN)/scores.json: $(TEST_PROBS) $(wildcard $(RUN)/refit/test.csv)
	$(PY) -m pipeline ensemble $(ARGS)

submission: $(SUBMISSION)
$(SUBMISSION): $(RUN)/scores.json
	$(PY) -m pipeline submission $(ARGS)

# WAIT=<seconds>: how long submit / kaggle-submit wait for the score (default 1800); WAIT=0 does not wait.
WAIT ?=
WAIT_FLAG := $(if $(WAIT), --wait $(WAIT))

submit: $(SUBMISSION)
	$(PY) -m pipeline submit $(ARGS)$(WAIT_FLAG)

scores:
	$(PY) -m pipeline scores --comp $(COMP)

blend:
	$(PY) -m pipeline blend --comp $(COMP)

cache: $(PROC)/folds.csv
	$(PY) -m pipeline cache $(ARGS)

bench:
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pipeline bench

# Looking at results. TTA=1 (or TTA=all) measures each TTA view on the OOF rows; LIMIT=9h (the kernel's time
# limit), TEST_IMAGES=N (a hidden test set's size) and SLOWDOWN=X (kernel GPU X times slower) feed the time plan.
PLAN_FLAGS := $(if $(LIMIT), --time-limit $(LIMIT))$(if $(TEST_IMAGES), --test-images $(TEST_IMAGES))$(if $(SLOWDOWN), --slowdown $(SLOWDOWN))
.PHONY: report experiments doctor plan

report: $(RUN)/scores.json
	$(PY) -m pipeline report $(ARGS)$(PLAN_FLAGS)$(if $(TTA), --tta $(filter all,$(TTA)))

experiments:
	$(PY) -m pipeline experiments --comp $(COMP)

doctor:
	$(PY) -m pipeline doctor

plan:
	$(PY) -m pipeline plan $(if $(BLEND),--comp $(COMP) --blend $(BLEND),$(ARGS))$(PLAN_FLAGS)

# Kaggle Kernel: KAGGLE_USER=<name> names the account that will own the dataset and kernel (default: credentials').
# KAGGLE_ACCELERATOR=t4x2|l4|p100|none picks the kernel's GPU (default t4x2; none when the config's device is cpu).
# BLEND=<name> (configs/<comp>/blend.yaml's name, COMP= or CONFIG= for the competition): the whole blend instead of
# one experiment: every member's folds in one bundle, blended in the Kernel exactly as `make blend` did.
# MODEL=1 (or kaggle.weights: model): the fold weights travel as a versioned Kaggle Model (model_sources), not in
# the dataset.
BLEND ?=
BUNDLE := $(if $(BLEND),data/runs/$(COMP)/blend/$(BLEND),$(RUN))/kaggle-bundle
KAGGLE_ARGS := $(if $(BLEND),--comp $(COMP) --blend $(BLEND),$(ARGS))
BUNDLE_NEEDS := $(if $(BLEND),,$(RUN)/scores.json)
WEIGHTS_FLAG := $(if $(MODEL), --weights model)
BUNDLE_FLAGS := $(if $(KAGGLE_USER), --user $(KAGGLE_USER))$(if $(KAGGLE_ACCELERATOR), --accelerator $(KAGGLE_ACCELERATOR))$(WEIGHTS_FLAG)
.PHONY: kaggle-bundle kaggle-push kaggle-submit kaggle-wheels

kaggle-bundle: $(BUNDLE_NEEDS)
	$(PY) -m pipeline kaggle-bundle $(KAGGLE_ARGS)$(BUNDLE_FLAGS)

$(BUNDLE)/dataset/bundle.json: | $(BUNDLE_NEEDS)
	$(PY) -m pipeline kaggle-bundle $(KAGGLE_ARGS)$(BUNDLE_FLAGS)

kaggle-push: $(BUNDLE)/dataset/bundle.json
	$(PY) -m pipeline kaggle-push $(KAGGLE_ARGS)$(if $(FORCE), --force)$(WEIGHTS_FLAG)

kaggle-submit:
	$(PY) -m pipeline kaggle-submit $(KAGGLE_ARGS)$(WAIT_FLAG)

# A compiled wheel no index has for the Kernel's Python: build it on Kaggle (PACKAGES="name==version ..." or the
# ones kaggle-bundle could not fetch); kaggle-bundle then attaches that notebook's output (kernel_sources).
kaggle-wheels:
	$(PY) -m pipeline kaggle-wheels $(KAGGLE_ARGS)$(if $(PACKAGES), --packages "$(PACKAGES)")$(if $(KAGGLE_USER), --user $(KAGGLE_USER))

bench-recipe: ## default recipe vs a starter-notebook loop, held-out (Fashion-MNIST + OpenCV digits; BENCH_QUICK=1: ~15 min)
	$(PY) -m pipeline.benchmarks.recipe_bench

bench-imbalance: ## class_weights, sampler, logit-adjusted and focal loss vs baseline and starter on skewed Fashion-MNIST (acc. + macro-F1)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pipeline.benchmarks.imbalance

bench-techniques: ## soup, refit, seed bag, pseudo-labels, distillation vs the baseline, held-out (Fashion-MNIST; ~30 min)
	$(PY) -m pipeline.benchmarks.techniques

bench-scale: ## every stage on synthetic photo competitions of N images: wall, CPU, peak RSS, growth (default N="10000 30000 100000": ~40 min)
	$(PY) -m pipeline.benchmarks.scale$(if $(N), --n $(N))$(if $(LAYOUTS), --layouts $(LAYOUTS))

# Sweeps and tracking. SWEEP=configs/<comp>/sweep.yaml (the default); TRACK=mlflow|tensorboard|wandb on any target.
SWEEP ?= configs/$(COMP)/sweep.yaml
.PHONY: sweep sweep-best mlflow-ui

sweep: $(COMP_YAML) $(DEMO_DEPS) | $(RAW_STAMP)
	$(PY) -m pipeline sweep $(ARGS) --sweep $(SWEEP)

sweep-best:
	$(PY) -m pipeline sweep-best $(ARGS) --sweep $(SWEEP)

mlflow-ui:
	$(PY) -m pipeline mlflow-ui$(if $(PORT), --port $(PORT))

# One torch thread per test process (two threads collapse when anything else uses the CPU), one process per core.
TEST_WORKERS ?= 2
test: ## run the whole test suite, slow end-to-end cases included (CI calls this; TEST_WORKERS=1: one process)
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS)

test-fast: ## the contributor loop: unit and contract tests, no training beyond a few steps, no make/subprocess chains
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not slow" -p no:cacheprovider -n $(TEST_WORKERS)

lint: ## ruff format --check + ruff check
	$(VENV)/bin/ruff format --check pipeline tests
	$(VENV)/bin/ruff check pipeline tests

paths: ## print the artifact paths Make uses for CONFIG
	@echo "raw_stamp=$(RAW_STAMP) folds=$(PROC)/folds.csv run=$(RUN) submission=$(SUBMISSION) n_folds=$(NFOLDS) seeds=$(subst $(space),$(comma),$(SEEDS)) overrides_stamp=$(RUN)/.overrides weights=$(subst $(space),$(comma),$(strip $(WEIGHTS)))"

FORCE:
