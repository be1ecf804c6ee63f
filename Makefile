# The two commands of the README: `make demo` and `make test`. Each sets up .venv on a fresh machine first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# offline LPIPS weights when ../shared is beside the clone (elsewhere LPIPS is reported as unavailable)
export RESTORE_LPIPS_WEIGHTS ?= $(wildcard ../shared/data/lpips/lpips_alex_v0.1.safetensors)

.PHONY: demo test test-all bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/restore demo --out demo_out

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/operators.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
