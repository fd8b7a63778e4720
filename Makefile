# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned to the builds this workplace keeps on disk (see README)
TORCH := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-heavy lint bench bench-rerun bench-neighbors bench-ray clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(STAMP)
	$(BIN)/embedlake demo

# the suite in two tiers: `make test` the fast one, `make test-heavy` the cases marked heavy
# (tens of seconds each: kill points, serve, a process worker, Ray); CI runs both
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -m "not heavy" $(PYTEST_ARGS)

test-heavy: $(TEST_STAMP)
	$(BIN)/python -m pytest -m heavy $(PYTEST_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# prints the README's CPU table; the JSON lands in bench/results/ (bench/measured/ holds the quoted one)
bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python bench/throughput.py $(BENCH_ARGS)

bench-rerun: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python bench/rerun.py $(BENCH_ARGS)

bench-neighbors: $(STAMP)
	$(BIN)/pip install --quiet -e ".[ann]"
	$(BIN)/python bench/neighbors.py $(BENCH_ARGS)

bench-ray: $(STAMP)
	$(BIN)/pip install --quiet -e ".[ray]"
	$(BIN)/python bench/ray_overhead.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) lake
