# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs everything, runs the built-in comparison (offline)
#   make test   creates .venv, installs everything, runs the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch where it lies on disk (here); a GPU machine gets PyPI's CUDA build of the
# same release, and an existing torch that satisfies pyproject's range is left alone.
TORCH ?= torch==2.13.0

# A CPU with AVX2 alone, simulated on a bigger x86 CPU: the machine probe reports AVX2 only, and oneDNN, ATen and
# MKL run their AVX2 kernels (bf16 emulated, as on such a CPU): `make test-avx2`, `make demo-avx2`.
AVX2_ONLY := DISTILBENCH_CPU_FLAGS=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2

.PHONY: demo test test-slow test-avx2 demo-avx2 install clean

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

test-avx2: install
	$(AVX2_ONLY) $(PY) -m pytest -q

demo-avx2: install
	$(AVX2_ONLY) $(VENV)/bin/distilbench compare --config configs/demo.yaml --out runs/demo-avx2 --overwrite

test-slow: install
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs
