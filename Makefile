# Developer shortcuts. `make bench BENCH_ARGS="--repeat 3"` passes options through.

PYTHON ?= .venv/bin/python
BENCH_ARGS ?=

.PHONY: bench bench-transfer
bench:
	$(PYTHON) benchmarks/run.py $(BENCH_ARGS)

bench-transfer:
	$(PYTHON) benchmarks/transfer_bench.py $(BENCH_ARGS)
