# medcl developer commands. `make test` works on a fresh machine: it builds .venv first.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned in the same command: a bare resolve would fetch a multi-GB CUDA build.
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q "$(TORCH)" -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check medcl tests bench
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check medcl tests bench

demo: $(STAMP)
	$(BIN)/medcl demo --out demo_run

bench: $(STAMP)
	$(BIN)/python bench/losses.py
	$(BIN)/python bench/data.py
	$(BIN)/python bench/pretrain.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
