# The README's two commands: `make demo` and `make test`. Both create the
# virtual environment on first use, so a fresh clone needs nothing else.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# make demo DEMO_ARGS="--hold 60": keep the supervisor demo (and its status page) up a minute
DEMO_ARGS ?=

.PHONY: all demo test lint typecheck pytest bench docs clean

all: test

# setup.py and the C files: the optional C modules are built by the install.
$(STAMP): pyproject.toml setup.py aioproc/_waiting/_waitid.c aioproc/_clone_exec.c
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py
	@echo
	$(BIN)/python examples/supervisor_demo.py $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check setup.py aioproc aioproc_main tests examples benchmarks tools
	$(BIN)/ruff format --check setup.py aioproc aioproc_main tests examples benchmarks tools

typecheck: $(STAMP)
	$(BIN)/mypy aioproc aioproc_main

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/spawn_wait.py

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache aioproc/_waiting/*.so aioproc/*.so
