# One task runner: the same commands locally, in pre-commit and in .ci/run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test unit lint fmt demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $@

## The whole suite: lint, types, then every test tier. CI runs exactly this.
## TEST_WORKERS pytest processes (pytest-xdist): most of the suite's wall time waits on emulators,
## servers and browsers, so 4 processes fit on 2 cores. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 4
test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS)

unit: setup
	$(PY) -m pytest -q tests/unit

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

fmt: setup
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

## Sets up, starts comfyrun with emulator backends, runs ComfyUI's default text-to-image
## workflow end to end and prints where the output image was saved.
demo: setup
	$(VENV)/bin/comfyrun demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
