# Two commands on a fresh machine: `make run` (service + demo on embedded defaults) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser run demo test shell clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned and installed first: an open range pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[ml,dev]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/apa-fleet run

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/apa-fleet run --exit-after-demo

# tests/ui drive Debian's Chromium through Playwright (Playwright's own browser download is not
# used). Idempotent: installs only when the binary is missing.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { echo "make: installing Debian's chromium for tests/ui"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -rs -p no:cacheprovider $(PYTEST_ARGS)

# A shell with the virtualenv's bin first on PATH, so `apa-fleet` works as typed in the README.
shell: $(STAMP)
	@echo "apa-fleet is on PATH in this shell; type exit to leave."
	@VIRTUAL_ENV="$(CURDIR)/$(VENV)" PATH="$(CURDIR)/$(BIN):$$PATH" $${SHELL:-/bin/sh} -i

clean:
	rm -rf $(VENV) var
