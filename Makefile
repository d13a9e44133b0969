# Developer shortcuts. `make bench BENCH_ARGS="--repeat 3"` passes options through.

PYTHON ?= .venv/bin/python
BENCH_ARGS ?=

.PHONY: bench
bench:
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)
