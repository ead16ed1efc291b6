# One command each, on a fresh machine: `make demo` (set up + run the demo), `make test`
# (set up + run the tests). Set-up installs the CPU torch wheel first and pins it in the same
# pip command, so nothing pulls a multi-GB CUDA build onto a CPU machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint clean native

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.edgekit-installed: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[all]" "$(TORCH)"
	touch $@

setup: $(VENV)/.edgekit-installed

demo: setup
	$(BIN)/edgekit demo

test: setup
	$(BIN)/pytest -q

# The native runtime (runtimes/native/): libedgekit + edgekit-rank in build/native; installs its
# system build packages where missing and links the venv's onnxruntime (so it needs setup).
native: setup
	PYTHON=$(BIN)/python bash runtimes/native/build.sh

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info
