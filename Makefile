# medcl developer commands. `make test` works on a fresh machine: it builds .venv first.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# Where pip finds torch: e.g. PIP_INDEX=https://download.pytorch.org/whl/cu128 for a CUDA build
# (passed as --index-url to the torch install only); PIP_EXTRA adds an --extra-index-url.
PIP_INDEX ?=
PIP_EXTRA ?=
TORCH_INDEX := $(if $(PIP_INDEX),--index-url $(PIP_INDEX)) $(if $(PIP_EXTRA),--extra-index-url $(PIP_EXTRA))
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser test lint demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned in the same command: a bare resolve would fetch a multi-GB CUDA build.
	$(BIN)/pip install -q $(TORCH_INDEX) "$(TORCH)"
	$(BIN)/pip install -q "$(TORCH)" -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Headless chromium for the report-rendering test; best effort (needs root and apt-get): without it
# that test is skipped with its reason (pytest -rs).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "note: chromium not installed; the report-rendering test will be skipped"

test: $(STAMP) browser
	$(BIN)/ruff check medcl tests bench
	$(BIN)/python -m pytest -q -rs tests

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
