# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mtnews-installed
# `make demo DATA_FORMAT=mind` writes the synthetic data in the MIND layout and runs on it (in runs/demo-mind).
DATA_FORMAT ?= ebnerd
DEMO_DIR ?= runs/demo$(if $(filter mind,$(DATA_FORMAT)),-mind)
DEMO_DATA ?= $(DEMO_DIR)/data

.PHONY: install test test-fast demo clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch is pinned first so pip picks the local CPU wheel instead of a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The fast tier (about 2 minutes): everything but the tests marked slow.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(PY) -m mtnews demo --out $(DEMO_DIR) --format $(DATA_FORMAT)

clean:
	rm -rf $(VENV) runs .pytest_cache
