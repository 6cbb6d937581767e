# The two commands the README starts with: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Short on purpose: the sandbox engine's unix socket lives in it (sockets paths are < 108 bytes).
SANDBOX ?= $(CURDIR)/.sandbox/demo
PYTEST_ARGS ?=

.PHONY: venv demo demo-stop provision lint test test-unit bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# A private sandbox engine seeded with realistic content (or the engine already reachable),
# then `reclaim df` and `reclaim df -v` on it.
demo: venv
	$(BIN)/python -m sandbox demo --dir $(SANDBOX)

demo-stop: venv
	$(BIN)/python -m sandbox stop --dir $(SANDBOX) --remove

# Host packages (Debian's docker.io, containerd, runc, busybox-static) and Docker 26 unpacked
# from trixie, for the three engine configurations the tests run against.
provision: venv
	$(BIN)/python -m sandbox provision

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test-unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test: provision lint
	$(BIN)/pytest $(PYTEST_ARGS)

# Each benchmark exits 1 when it misses a target; the leading "-" lets the others still run.
bench: provision
	-$(BIN)/python bench/bench_accounting.py
	-$(BIN)/python bench/bench_plan.py
	-$(BIN)/python bench/bench_df.py
	-$(BIN)/python bench/bench_ledger.py
	-$(BIN)/python bench/bench_apply.py
	-$(BIN)/python bench/bench_fsck.py

clean: demo-stop
	rm -rf $(VENV) .sandbox
