# Two commands for a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Both create or reuse the virtual environment in $(VENV) and install what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 installs from a local CPU wheel on our dev/CI machines; elsewhere, override it,
# e.g. `make test TORCH='torch>=2.4'`, or install torch first.
TORCH ?= torch==2.13.0

.PHONY: demo test lint bench-classic bench-lm

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,bench]"
	touch $@

demo: $(VENV)/.installed
	$(PY) -m classic.train --env CartPole-v1 --seed 0 --out runs/cartpole --overwrite
	$(PY) -m classic.evaluate runs/cartpole --episodes 100 --seed 123
	$(PY) -m lm.train --out runs/rlhf --overwrite

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	PPO_BRIDGE_FAST=1 $(PY) -m pytest -q --nbmake tests notebooks

lint: $(VENV)/.installed
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

bench-classic: $(VENV)/.installed
	$(PY) -m bench.classic

bench-lm: $(VENV)/.installed
	$(PY) -m bench.lm
