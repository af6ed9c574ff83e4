# Two commands matter: `make demo` and `make test`. Both set everything up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.circuitsviz-installed
# torch/torchvision are installed first and on their own, pinned to a pair this machine carries
# locally; pip then sees them satisfied and never pulls a multi-GB wheel for the project.
ARCH := $(shell uname -m)
ifeq ($(ARCH),aarch64)
TORCH ?= torch==2.9.1 torchvision==0.24.1
else
TORCH ?= torch==2.14.1 torchvision==0.29.1
endif
RUN ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test install venv bench clean help

help:
	@echo "make demo   set up, run the study on the bundled model, serve the viewer"
	@echo "make test   set up and run the whole test suite"
	@echo "make bench  run the benchmarks in benchmarks/ (installs the peers of the bench extra)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/circuitsviz demo --out $(RUN)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The peers install next to the project's torch/torchvision/numpy, which a constraints file holds.
bench: install
	$(BIN)/python -m pip freeze | grep -iE '^(torch|torchvision|numpy)==' > $(VENV)/bench-constraints.txt
	$(BIN)/python -m pip install -q -c $(VENV)/bench-constraints.txt -e '.[bench]'
	test -d $(RUN) || $(BIN)/circuitsviz demo --no-serve --no-evaluate --out $(RUN)  # viewer.py times its pages
	for f in benchmarks/[!_]*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
