# Two commands for a fresh Linux machine with Python 3.11:
#   make demo   - set up .venv and run the main job on the embedded synthetic default
#   make test   - set up .venv and run the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint bench setup clean

$(STAMP): pyproject.toml constraints.txt CMakeLists.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch is pinned to the 2.13 CPU build by constraints.txt; the editable install compiles csrc/
	# DDE_BUILD_TESTING: also the test-only module _dde_gpu_emulation (never in a wheel)
	DDE_BUILD_TESTING=ON $(PY) -m pip install -c constraints.txt -e ".[train,ort,sign,supervision,dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m training run --config configs/quickstart.yaml

test: $(STAMP)
	$(PY) -m pytest -q tests

# the fast subset: everything but the end-to-end tests marked slow
test-fast: $(STAMP)
	$(PY) -m pytest -q tests -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check training tests diffdefect_edge benchmarks examples

bench: $(STAMP)
	$(PY) -m pytest benchmarks --benchmark-json=benchmarks/results.json

clean:
	rm -rf build $(VENV) runs
