# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml requirements-cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-cpu.txt
	$(BIN)/python -m pip install -q -e ".[test,bench,deploy,napari,bioimageio]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/unetkit demo

test: $(STAMP)
	$(BIN)/ruff check unetkit tests benchmarks
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
