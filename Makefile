# Parley: `make run` starts the platform, `make test` installs and tests everything.
SHELL := /bin/bash
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)

.PHONY: run test lint format proto proto-check install system-packages bench images clean

$(TOOLS)/bin/uv:
	python3 -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

install: $(if $(shell command -v uv 2>/dev/null),,$(TOOLS)/bin/uv)
	$(UV) sync --frozen

run: install
	$(UV) run parley-dev

# Chromium and Prometheus, driven by the browser and observability tests.
system-packages:
	scripts/system-packages.sh

test: install proto-check system-packages
	$(UV) run pytest

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy libs/runtime/src libs/embeddings/src tools/provider-fakes/src tools/devstack/src tools/testkit/src \
		services/gateway/src services/conversation/src services/llm-router/src \
		services/retrieval/src services/ingest/src deploy/observability/src

format: install
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

proto: install
	$(UV) run python scripts/proto.py

proto-check: install
	$(UV) run python scripts/proto.py --check

bench: install
	$(UV) run python bench/router.py

# Builds the five images with podman and runs each as its chart does (deploy/images/README.md).
images: install
	UV_VERSION=$(UV_VERSION) deploy/images/build.sh
	$(UV) run python deploy/images/check.py

# Lints, renders and checks the Helm charts offline (deploy/README.md); part of `make test`.
.PHONY: charts
charts: install
	$(UV) run pytest -q tests/deploy/test_charts*.py

clean:
	rm -rf .parley .venv $(TOOLS)
