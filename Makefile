# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs everything, runs the built-in comparison (offline)
#   make test   creates .venv, installs everything, runs the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch where it lies on disk (here); a GPU machine gets PyPI's CUDA build of the
# same release, and an existing torch that satisfies pyproject's range is left alone.
TORCH ?= torch==2.13.0

.PHONY: demo test test-slow install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/distilbench compare --config configs/demo.yaml --out runs/demo --overwrite

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs
