# The two commands a newcomer needs: `make verify` and `make test`. Every target bootstraps what it needs and is
# idempotent: a second run changes nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080
EVIDENCE_DIR ?= evidence
export MOCKS_DISABLED ?= 1
export DEV ?= CPU

.PHONY: setup system-deps datasets steps serve verify test bench lint clean help

help:
	@echo "make verify  start the reference server, run a real training run, verify it with the conformance suite, gate, write the evidence pack"
	@echo "make test    the whole test suite through tox (server, trainer, conformance, ruff, mypy)"
	@echo "make setup   .venv with both packages, clang, Fashion-MNIST imported and verified, default steps compiled"
	@echo "make serve   the reference server on $(HOST):$(PORT), evidence under ./$(EVIDENCE_DIR)"
	@echo "make bench   the benchmarks"

setup: system-deps $(STAMP) datasets steps

# clang: tinygrad's CPU backend compiles with it. dataset-fashion-mnist: the real data, offline.
system-deps:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml functions/trainer-tinygrad/pyproject.toml conformance/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-e ./functions/trainer-tinygrad -e '.[dev,ray]' -e ./conformance
	@touch $@

datasets: $(STAMP)
	@$(BIN)/trainer-datasets import-known

# The default runs' compiled steps into the step cache, so a first run starts as fast as a second one. Idempotent:
# ~2 s when they are already there, ~20 s from nothing; bounded by the timeout (a run compiles whatever is missing).
steps: $(STAMP)
	@timeout 300 $(BIN)/python -m trainer_tinygrad.warm || echo "warning: default steps not precompiled (runs compile them)"

serve: setup
	$(BIN)/python -m reference_server --host $(HOST) --port $(PORT) --evidence-dir $(EVIDENCE_DIR)

EXECUTOR ?= local
verify: setup
ifeq ($(EXECUTOR),ray)
	@scripts/loopback-only $(BIN)/python scripts/verify.py --evidence-dir $(EVIDENCE_DIR) --executor ray
else
	@$(BIN)/python scripts/verify.py --evidence-dir $(EVIDENCE_DIR)
endif

test: setup
	@$(BIN)/tox run -e lint,type,conformance,function,fuzz,openapi-client,py,ray

bench: setup
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements.txt
	@$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf .tox build dist *.egg-info conformance/build .pytest_cache .mypy_cache .ruff_cache
