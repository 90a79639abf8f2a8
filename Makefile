# Two entry points that work on a fresh machine with only Python 3.11:
#   make test   -> create/reuse .venv, install the package with the dev, deploy, plots and augment extras, run ruff
#                  and pytest
#   make demo   -> create/reuse .venv, train the small default config on synthetic data, evaluate, predict
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install test lint format clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) setup.cfg pyproject.toml
	# torch and torchvision first: pinned to the wheels this machine carries, ranges in setup.cfg allow newer
	$(PY) -m pip install -q "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1"
	$(PY) -m pip install -q -e ".[dev,deploy,plots,augment]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	# one test file per worker (module fixtures built once), one worker per core up to 4
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

# Speed against transformers' DETR in one run, ratios measured side by side (see benchmarks/README.md);
# `make bench BENCH_ARGS=--quick` for a short development run.
.PHONY: bench
bench: install
	$(PY) benchmarks/run.py $(BENCH_ARGS) --output benchmarks/results.json --markdown benchmarks/results.md

# Train the small default DETR from scratch on the synthetic shapes (CPU, accelerate launch), evaluate it, and draw
# pipeline detections on held-out images: outputs/demo/last (checkpoint), outputs/demo.png. `DEMO_ARGS=--help`;
# `DEMO_ARGS="--task panoptic"`: the segmentation demo (outputs/demo_panoptic/last, outputs/demo_panoptic.png).
.PHONY: demo
demo: install
	$(PY) scripts/demo.py $(DEMO_ARGS)

clean:
	rm -rf $(VENV) outputs .cache build *.egg-info
