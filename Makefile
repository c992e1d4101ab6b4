# The two commands a newcomer needs: `make verify` and `make test`. Every target bootstraps what it needs and is
# idempotent: a second run changes nothing.
SHELL := /bin/bash
# The interpreter of .venv, and so of tox's environments: the system's own /usr/bin/python3 when it is 3.11 or newer
# and can put pip into a venv, else the first python3 on PATH; `make setup PYTHON=python3.12` picks another. A
# distribution builds its interpreter with PGO and LTO, pyenv's default build (first on this machine's PATH) neither:
# `make test` ~10% faster on Debian's (BENCHMARKS.md section 7, session 18). Recursive, so the check runs only when
# the venv is made; a venv keeps the interpreter it was made with (`rm -rf .venv` to change it).
SYSTEM_PYTHON := /usr/bin/python3
PYTHON ?= $(shell $(SYSTEM_PYTHON) -c 'import sys, importlib.util as u; \
	sys.exit(sys.version_info < (3, 11) or not (u.find_spec("pip") or u.find_spec("ensurepip")))' 2>/dev/null \
	&& echo $(SYSTEM_PYTHON) || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_QUIET := --quiet --disable-pip-version-check
EVIDENCE_DIR ?= evidence
export MOCKS_DISABLED ?= 1
export DEV ?= CPU

.PHONY: setup system-deps datasets steps serve verify test bench lint clean help

help:
	@echo "make verify        start the reference server, run a real training run, verify it with the conformance suite, gate, write the evidence pack"
	@echo "make test          the whole test suite through tox (lint, types, conformance, server, trainer, datasets, docs, browser, Ray)"
	@echo "make setup         .venv with the three packages, system packages (clang, curl, chromium), Fashion-MNIST imported and verified, default steps compiled"
	@echo "make serve         the reference server until Ctrl-C: 127.0.0.1:8080, evidence under ./evidence"
	@echo "                   (make serve PORT=9000, also HOST= and EVIDENCE_DIR=; or TRAINER_PORT=9000 make serve)"
	@echo "make bench         the benchmarks (results in BENCHMARKS.md)"
	@echo "make lint          ruff check and ruff format --check"
	@echo "make clean         remove tox, build and tool caches (not .venv, not evidence/)"
	@echo "make system-deps   the Debian packages only (part of setup)"
	@echo "make steps         compile the default runs' training steps into the step cache only (part of setup)"
	@echo "make datasets      import and verify the well-known local datasets only (part of setup)"
	@echo "make help          this list"

setup: system-deps $(STAMP) datasets steps

# clang: tinygrad's CPU backend compiles with it. dataset-fashion-mnist: the real data, offline.
system-deps:
	@bash scripts/system-deps.sh

# uv installs the packages (~4 s against ~24 s with pip), pip among them for `make bench`'s PyTorch. The venv is made
# without pip and this Python's own pip puts uv into it (`pip --python`, pip 22.3 and later): a venv's ensurepip took
# ~3 s of one core while the other waited. Where this Python's pip cannot, the venv gets its own pip first.
$(STAMP): pyproject.toml functions/trainer-tinygrad/pyproject.toml conformance/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv --without-pip $(VENV)
	@test -x $(BIN)/uv || $(PYTHON) -m pip --python $(BIN)/python install $(PIP_QUIET) "uv>=0.4" 2>/dev/null \
		|| { $(BIN)/python -m ensurepip --default-pip >/dev/null && $(BIN)/python -m pip install $(PIP_QUIET) "uv>=0.4"; }
	$(BIN)/uv pip install --quiet --python $(BIN)/python pip \
		-e ./functions/trainer-tinygrad -e '.[dev,ray]' -e ./conformance
	@touch $@

datasets: $(STAMP)
	@$(BIN)/trainer-datasets import-known

# The default runs' compiled steps into the step cache, so a first run starts as fast as a second one. Idempotent:
# ~2 s when they are already there, ~20 s from nothing; bounded by the timeout (a run compiles whatever is missing).
steps: $(STAMP)
	@timeout 300 $(BIN)/python -m trainer_tinygrad.warm || echo "warning: default steps not precompiled (runs compile them)"

# A flag only for a variable given on make's command line (`make serve PORT=9000`), so that without one the server's
# own variables apply (`TRAINER_PORT=9000 make serve`), then its defaults.
given = $(if $(filter command line,$(origin $(1))),$(2) '$($(1))')
serve: setup
	$(BIN)/python -m reference_server $(call given,HOST,--host) $(call given,PORT,--port) \
		$(call given,EVIDENCE_DIR,--evidence-dir)

EXECUTOR ?= local
verify: setup
ifeq ($(EXECUTOR),ray)
	@scripts/loopback-only $(BIN)/python scripts/verify.py --evidence-dir $(EVIDENCE_DIR) --executor ray
else
	@$(BIN)/python scripts/verify.py --evidence-dir $(EVIDENCE_DIR)
endif

# Two lanes of tox environments at once, the background one niced (scripts/test-lanes says which and why); the
# background lane compiles the default steps too, so `test` needs all of `setup` but `steps` first.
test: system-deps $(STAMP) datasets
	@scripts/test-lanes

bench: setup
	@$(BIN)/python -m pip install $(PIP_QUIET) -r benchmarks/requirements.txt
	@$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf .tox build dist *.egg-info conformance/build .pytest_cache .mypy_cache .ruff_cache
