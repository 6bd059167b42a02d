# FinGate: `make serve` and `make test` are all a newcomer needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install serve test lint sdl bench e2e graphiql-assets clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	@touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(BIN)/fingate serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check app tests bench
	$(BIN)/ruff format --check app tests bench
	$(BIN)/mypy

sdl: $(STAMP)
	$(BIN)/fingate sdl > schema/fingate.graphql

bench: $(STAMP)
	$(BIN)/python -m bench

# A real browser (Debian's chromium, driven by Playwright) against `fingate serve`, and the PDFs rasterised
# with poppler's pdftoppm; CI runs as root.
e2e: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { apt-get update && apt-get install -y chromium; }
	@command -v pdftoppm >/dev/null 2>&1 || { apt-get update && apt-get install -y poppler-utils; }
	@$(BIN)/python -c 'import playwright' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[embedded,dev,e2e]'
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e

# Re-fetches the pinned GraphiQL build (app/static/graphiql/README.md); only the lead needs npm.
GRAPHIQL := graphiql@4.1.2 react@18.3.1 react-dom@18.3.1
graphiql-assets:
	@tmp=$$(mktemp -d) && cd $$tmp && npm pack --silent $(GRAPHIQL) >/dev/null && \
	for t in *.tgz; do mkdir $${t%.tgz} && tar xzf $$t -C $${t%.tgz}; done && \
	dest=$(CURDIR)/app/static/graphiql && mkdir -p $$dest && \
	cp graphiql-*/package/graphiql.min.js graphiql-*/package/graphiql.min.css $$dest/ && \
	cp graphiql-*/package/LICENSE $$dest/LICENSE.graphiql && \
	cp react-18*/package/umd/react.production.min.js $$dest/ && cp react-18*/package/LICENSE $$dest/LICENSE.react && \
	cp react-dom-*/package/umd/react-dom.production.min.js $$dest/ && cp react-dom-*/package/LICENSE $$dest/LICENSE.react-dom && \
	sha256sum *.tgz && rm -rf $$tmp

clean:
	rm -rf $(VENV) .fingate-data .pytest_cache
