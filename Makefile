# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The full pinned set for CI's Python (3.11, Linux x86_64); `make lock` regenerates it, see README.
LOCK := requirements.lock
LOCK_TOOLS := build/lock-tools

.PHONY: setup lock demo test lint bench clean

setup: $(STAMP)

# --no-deps: the lock is complete, and pip must not add what it leaves out on purpose (torchvision, which
# PyPI builds only against CUDA torch; nothing here imports it). The project itself then goes in editable.
$(STAMP): $(LOCK) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==25.1.1
	$(BIN)/pip install --quiet --no-deps -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Keeps every pin it can; `make lock LOCK_ARGS=--upgrade` moves everything to the newest release.
# constraints.txt holds torch on the CPU wheel that pip finds on this machine's disk.
lock:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install --quiet pip==25.1.1 pip-tools==7.6.2
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet $(LOCK_ARGS) --extra dev \
		--constraint constraints.txt --strip-extras --unsafe-package torchvision \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host --output-file $(LOCK) pyproject.toml

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
	$(BIN)/python bench/bench_batch.py
	$(BIN)/python bench/bench_shape_correspondence.py
	$(BIN)/python bench/evaluate_shape_model.py

clean:
	rm -rf $(VENV) demo-output
