# histo-net: two commands on a fresh machine.
#   make demo   create .venv, install the package, run the end-to-end synthetic demo
#   make test   create/update .venv with the dev extras and run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo_out

.PHONY: demo test test-slow install install-dev benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Stamps re-run pip only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: install
	$(VENV)/bin/histo-net demo --out $(DEMO_OUT)

test: install-dev
	$(PY) -m pytest -q

test-slow: install-dev
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build *.egg-info
