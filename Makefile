# Two entry points for a new user (see README): `make demo` and `make test`.
# Both create .venv, install the CPU build of torch first (so no dependency can pull a
# multi-GB CUDA build), then mimtl with its extras. On a GPU machine: make demo TORCH=torch
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install demo test bench clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH)"
	$(PIP) install -e ".[all,test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/mimtl demo

test: install
	$(PY) -m pytest -q
	$(VENV)/bin/mimtl verify --all

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache build *.egg-info
