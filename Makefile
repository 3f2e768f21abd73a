# Oversight: `make run` starts everything on embedded defaults; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements.sha256

.PHONY: run test install lint bench clean

# Installs the pinned requirements into .venv, only when they changed.
install:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Oversight needs Python 3.11 or newer (set PYTHON=python3.11).")'
	@test -x $(PY) || { echo "Creating $(VENV) ..."; $(PYTHON) -m venv $(VENV); }
	@want=$$(cat requirements.txt requirements-dev.txt $(wildcard clients/python/pyproject.toml) | sha256sum | cut -d' ' -f1); \
	if [ "$$(cat $(STAMP) 2>/dev/null)" != "$$want" ]; then \
		echo "Installing the pinned requirements ..."; \
		$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt && \
		{ [ ! -f clients/python/pyproject.toml ] || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e 'clients/python[mcp,receipts]'; } && \
		echo "$$want" > $(STAMP); \
	fi

run: install
	@exec $(PY) -m oversight.runner

test: install
	@scripts/ensure-browser
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .
	$(PY) manage.py makemigrations --check --dry-run

bench: install
	$(PY) bench/api.py

clean:
	rm -rf var .pytest_cache
