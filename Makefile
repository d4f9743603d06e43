# Dispensary: the two set-up commands are `make run` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export FLASK_APP := wsgi.py

.PHONY: run test lint services install install-dev migrate seed worker web bench-routing bench-inventory bench-web clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Install only when pyproject.toml changed since the last install.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## make run: migrate + seed the SQLite database, then Redis (running or embedded), worker, web.
run: install
	bash scripts/run.sh

## make test: ensure PostgreSQL and Redis, then lint, type checks and the whole suite.
test: install-dev
	bash scripts/ensure-services.sh
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy pharmacy config.py
	$(BIN)/mypy --strict routing inventory
	$(BIN)/python -m pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy pharmacy config.py
	$(BIN)/mypy --strict routing inventory

services:
	bash scripts/ensure-services.sh

migrate: install
	$(BIN)/flask db upgrade

seed: migrate
	$(BIN)/flask seed-demo

bench-routing: install
	$(BIN)/python -m routing bench

bench-inventory: install
	$(BIN)/python -m inventory bench

## make bench-web: gunicorn (2 workers) under load from a second process; prints the table.
bench-web: install-dev
	bash scripts/ensure-services.sh
	$(BIN)/python scripts/bench_web.py

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .mypy_cache
