# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sternum-ssm demo --output demo-output

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python bench/bench_phantom.py
	$(BIN)/python bench/bench_segmentation.py
	$(BIN)/python bench/bench_landmark_augmentation.py
	$(BIN)/python bench/bench_landmark_qa.py
	$(BIN)/python bench/bench_landmark_model.py

clean:
	rm -rf $(VENV) demo-output
