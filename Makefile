# Two entry points, both self-installing on a fresh Debian machine:
#   make up    — install, then run SMCP with a demo tenant and server
#   make test  — install everything the tests need, then run the whole suite
SHELL := /bin/bash
# Debian's own interpreter when it is recent enough: it is built with PGO and LTO and
# runs the gateway's hot path ~1.7x faster than an unoptimised build (pyenv's default)
# that may come first on PATH. Override with `make PYTHON=...`.
PYTHON ?= $(shell /usr/bin/python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && echo /usr/bin/python3 || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
export WRANGLER_SEND_METRICS := false
export CLOUDFLARE_CF_FETCH_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: up test bench system-deps python-deps node-deps clean

system-deps:
	@missing=""; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	/sbin/ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || missing="$$missing libseccomp2"; \
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "SMCP needs:$$missing — run: sudo apt-get install$$missing"; exit 1; fi; \
	fi

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

python-deps: system-deps $(VENV)/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

node-deps: system-deps node_modules/.installed

up: python-deps node-deps
	$(VENV)/bin/smcp up

test: python-deps node-deps
	$(PY) -m pytest -q

bench: python-deps
	@command -v wrk >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq wrk; else echo "install wrk"; exit 1; fi; }
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules .smcp
