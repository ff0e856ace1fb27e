# Every target builds .venv from the lockfile first, so a fresh clone needs only Python >= 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements-dev.lock pyproject.toml | cksum | cut -d' ' -f1)
PROMPT ?= Write a haiku about queues.

.PHONY: install demo demo-web test faults compat compat-latest bench bench-quick lint format mypy lock lock-compat clean

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

# The fast part first (no processes, browser, cluster or HTTP server; under a minute), stopping
# at the first failure; then the slow part (tests/conftest.py marks it), mostly waiting on
# processes and paced streams, in two sessions at once: one prints as it goes, the other's
# output follows. A -m here replaces pyproject's -m 'not compat', so each keeps that clause.
test: install
	$(BIN)/pytest -m 'not compat and not slow' -x
	@status=0; log=$$(mktemp); \
	$(BIN)/pytest -m 'slow and not compat' --group 2/2 -p no:cacheprovider >"$$log" 2>&1 & \
	other=$$!; \
	$(BIN)/pytest -m 'slow and not compat' --group 1/2 || status=1; \
	wait $$other || status=1; \
	echo "======== the other half of the slow tests, run alongside ========"; \
	cat "$$log"; rm -f "$$log"; exit $$status

# The fault-injection suite at full length (make test runs a short version of it).
faults: install
	STREAMQ_FAULTS=long $(BIN)/pytest tests/faults -s

# Direct SDK loop vs naive XADD per delta vs streamq, side by side; the gateway's fan-out; fair
# shares between tenants; token budgets (benchmarks/README.md).
bench: install
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.fanout
	$(BIN)/python -m benchmarks.fairness
	$(BIN)/python -m benchmarks.budgets
	$(BIN)/python -m benchmarks.plots

# A fifth of the bench, and its plots, in test-artifacts/bench/ (CI: the plots are valid SVG);
# then fair shares and budgets, smaller (they print their tables and write no file).
bench-quick: install
	$(BIN)/python -m benchmarks --quick --json test-artifacts/bench/quick.json
	$(BIN)/python -m benchmarks.plots test-artifacts/bench/quick.json
	$(BIN)/python -m benchmarks.fairness --quick
	$(BIN)/python -m benchmarks.budgets --quick

# The compat matrix (tests/compat, ~1 min once installed; needs Node.js >= 20.15 and npm): real
# clients against the gateway's OpenAI door, real servers behind the worker. Its Python clients
# and servers (langchain-openai, litellm[proxy]) live in .venv-compat, from
# requirements-compat.lock; its Node.js ones in compat/node_modules, from package-lock.json.
# Prints the client/server x feature table, also written to test-artifacts/compat-matrix.md.
COMPAT_VENV := .venv-compat
COMPAT_STAMP := $(COMPAT_VENV)/.installed-$(shell cat requirements-compat.lock | cksum | cut -d' ' -f1)
NODE_STAMP := compat/node_modules/.installed-$(shell cat compat/package-lock.json | cksum | cut -d' ' -f1)

compat: install $(COMPAT_STAMP) $(NODE_STAMP)
	$(BIN)/pytest -m compat tests/compat

$(COMPAT_STAMP): requirements-compat.lock
	$(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-compat.lock
	rm -f $(COMPAT_VENV)/.installed-* && touch $@

$(NODE_STAMP): compat/package.json compat/package-lock.json
	npm ci --prefix compat --no-audit --no-fund --silent
	touch $@

# streamq with the newest dependencies pip resolves within pyproject.toml's ranges (no lock), in a
# throwaway venv, against the tests that drive the openai SDK: a new release that breaks us
# shows up here before it reaches the lockfile.
LATEST_TESTS := tests/test_pipeline.py tests/test_parsers.py tests/test_upstream_habits.py \
	tests/test_simulator.py tests/gateway/test_openai_front_door.py
compat-latest:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "streamq needs Python >= 3.11 (set PYTHON=...)")'
	@set -e; venv=$$(mktemp -d); trap 'rm -rf "$$venv"' EXIT; \
	$(PYTHON) -m venv "$$venv"; \
	"$$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade '.[dev]'; \
	"$$venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
		| grep -iE '^(openai|httpx|httpx2|httpcore|httpcore2|pydantic|redis|arq|starlette|uvicorn) ' || true; \
	"$$venv/bin/python" -m pytest -p no:cacheprovider $(LATEST_TESTS)

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

# Regenerate requirements-compat.lock after changing compat/requirements-compat.in (needs uv).
lock-compat:
	uv pip compile compat/requirements-compat.in --python-version 3.11 --generate-hashes --no-header -q -o requirements-compat.lock

clean:
	rm -rf $(VENV) $(COMPAT_VENV) .pytest_cache .mypy_cache .ruff_cache
