# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format lock catalogues extract postgres chromium semgrep clean

$(STAMP): requirements-dev.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes \
		-r requirements-dev.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

run: $(STAMP) catalogues
	$(BIN)/amparo serve

# Debian's PostgreSQL server binaries, for the tests' throwaway clusters.
postgres:
	@scripts/ensure-postgres

# Debian's Chromium, for the dashboard's browser tests.
chromium:
	@scripts/ensure-chromium

catalogues: $(STAMP)
	$(BIN)/python -c "from core.i18n import compile_catalogues; compile_catalogues()"

# The suite runs in TEST_JOBS processes (pytest-xdist), each with its own PostgreSQL cluster
# and browser: two cores run it in about half the time of one. TEST_JOBS=0: one process.
TEST_JOBS ?= 2
test: $(STAMP) postgres chromium catalogues
	$(BIN)/pytest -n $(TEST_JOBS)

# Semgrep with the project's rules (SECURITY.md R28), offline; first the rules' own test cases.
SEMGREP := .venv-semgrep/bin/semgrep --metrics=off --disable-version-check --config .semgrep/amparo.yml
semgrep:
	@PYTHON=$(PYTHON) scripts/ensure-semgrep

lint: $(STAMP) semgrep
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(SEMGREP) --test .semgrep/amparo.py
	$(SEMGREP) --error --quiet core flows bot api amparo migrations bench

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Re-extract user-facing strings into locales/messages.pot and merge them into every catalogue.
extract: $(STAMP)
	$(BIN)/pybabel extract -F pyproject.toml -k N_ -c "TRANSLATORS:" --no-location --sort-output \
		--project=amparo -o locales/messages.pot .
	$(BIN)/pybabel update -i locales/messages.pot -d locales --no-fuzzy-matching --ignore-obsolete

# Re-resolve the locked dependency sets after editing pyproject.toml (runtime: the image;
# dev: what make installs).
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --generate-hashes \
		-q -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes \
		-q -o requirements-dev.lock
	$(BIN)/uv pip compile requirements-semgrep.in --python-version 3.11 --generate-hashes \
		-q -o requirements-semgrep.lock

clean:
	rm -rf $(VENV) .venv-semgrep .mypy_cache .pytest_cache .ruff_cache
