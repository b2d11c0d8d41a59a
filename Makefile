# Two set-up commands for a fresh machine: `make serve` and `make test`.
# Both install into .venv when requirements.lock or pyproject.toml changed; a second run is fast.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml 2>/dev/null | sha1sum | cut -c1-12)

.PHONY: install serve test bench demo-train openapi

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

serve: install
	$(VENV)/bin/millm serve $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

bench: install
	$(PY) -m benchmarks.run $(ARGS)

demo-train: install
	$(PY) -m millm.demo.train $(ARGS)

# frontend/openapi.json and frontend/frames.schema.json, from the app and its pydantic models (no server started)
openapi: install
	$(PY) -m millm.schema_dump
