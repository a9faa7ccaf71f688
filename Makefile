# Two commands: `make book` builds the site, `make test` runs every check. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BOOK_FLAGS := -W -n --keep-going

.PHONY: setup book test lint unit pairing nbval build-check site-check notebooks lab clean

setup: $(STAMP)

# Re-install only when the requirements or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Python 3.11+ is needed (PYTHON=$(PYTHON) is $$($(PYTHON) --version))"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

book: setup
	$(BIN)/jupyter-book build . $(BOOK_FLAGS)
	@echo "Site: file://$(CURDIR)/_build/html/index.html"

test: setup lint unit pairing nbval build-check site-check
	@echo "make test: every check passed"

lint: setup
	$(BIN)/ruff check lib tests benchmarks tools _ext
	$(BIN)/python tools/check_layers.py

# tests/site needs the built site: site-check runs it after build-check.
unit: setup
	$(BIN)/python -m pytest -q -n auto tests lib/scaleplay --doctest-modules --ignore=tests/site

pairing: setup
	$(BIN)/python tools/notebooks.py check

nbval: setup
	PYTHONPATH=tests $(BIN)/python -m pytest -q -p no:cacheprovider -p nbval_plugin --nbval-lax \
		--nbval-sanitize-with tests/nbval_sanitize.cfg notebooks

# The site build with warnings as errors, from a clean execution cache so that every chapter runs.
build-check: setup
	rm -rf _build
	$(BIN)/jupyter-book build . $(BOOK_FLAGS)

# The built site in the system's headless Chromium, driven by Playwright: every page with its figures
# and a clean console, tables and code that fit the column, and search.
# Skips, saying why, on a machine without a browser (-rs prints the reason).
site-check: setup
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider -m site tests/site

# Re-execute every chapter (or CHAPTERS="envelope roadmap") and rewrite its paired notebook
# (text outputs kept, images dropped).
notebooks: setup
	$(BIN)/python tools/notebooks.py write $(CHAPTERS)

lab: setup
	$(BIN)/python -c 'import jupyterlab' 2>/dev/null || $(BIN)/python -m pip install --quiet jupyterlab
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf _build .pytest_cache .ruff_cache .hypothesis
