# Every target builds .venv from the lockfile first, so a fresh clone needs only Python >= 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.lock pyproject.toml | cksum | cut -d' ' -f1)
PROMPT ?= Write a haiku about queues.

.PHONY: install demo demo-web test faults compat bench lint format mypy lock clean

install: $(STAMP)

$(STAMP): requirements-dev.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "streamq needs Python >= 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-* && touch $@

demo: install
	$(BIN)/streamq demo "$(PROMPT)"

# The HTTP gateway and its chat page on http://127.0.0.1:8080/, with a worker, the simulator
# (no OPENAI_API_KEY) and a throwaway Redis (none answering at REDIS_URL).
demo-web: install
	$(BIN)/streamq serve --demo

test: install
	$(BIN)/pytest

# The fault-injection suite at full length (make test runs a short version of it).
faults: install
	STREAMQ_FAULTS=long $(BIN)/pytest tests/faults -s

# Direct SDK loop vs naive XADD per delta vs streamq, side by side (~3 min; benchmarks/README.md).
bench: install
	$(BIN)/python -m benchmarks

# streamq against a third-party OpenAI-compatible server (needs Node.js >= 20.15 and npm).
compat: install
	npm ci --prefix compat --no-audit --no-fund --silent
	$(BIN)/pytest -m compat tests/compat

lint: install
	$(BIN)/ruff check src tests benchmarks docs/examples
	$(BIN)/ruff format --check src tests benchmarks docs/examples
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests benchmarks docs/examples
	$(BIN)/ruff check --fix src tests benchmarks docs/examples

mypy: install
	$(BIN)/mypy

# Regenerate the lockfiles after changing dependencies in pyproject.toml (needs uv).
lock:
	uv pip compile pyproject.toml --python-version 3.11 --extra gateway --extra metrics --generate-hashes --no-header -q -o requirements.lock
	uv pip compile pyproject.toml --python-version 3.11 --extra dev --generate-hashes --no-header -q -o requirements-dev.lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
