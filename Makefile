# Two entry points (README): `make serve` and `make test`. Each installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

# The vLLM pin lives in pyproject.toml only; images read it from there.
VLLM_VERSION := $(shell sed -n 's/^gpu = \["vllm==\(.*\)"\]/\1/p' pyproject.toml)

.PHONY: install model serve test lint bench clean vllm-version image-cpu image-gpu

install:
	@bash scripts/install.sh

model: install
	@$(PY) -m vsteer.cli model default

serve: model
	$(PY) -m vsteer.cli serve --host 127.0.0.1 --port 8000 $(ARGS)

test: model
	$(VENV)/bin/ruff check .
	TRITON_INTERPRET=1 $(PY) -m pytest tests/triton_interp -q $(PYTEST_ARGS)
	$(PY) -m pytest --durations=25 $(PYTEST_ARGS)

bench: model
	$(PY) bench/steer_overhead.py $(ARGS)

vllm-version:
	@echo $(VLLM_VERSION)

image-cpu:
	docker build -f deploy/docker/Dockerfile.cpu -t vsteer-cpu:local .

image-gpu:
	docker build -f deploy/docker/Dockerfile.gpu --build-arg VLLM_VERSION=$(VLLM_VERSION) \
	  -t vsteer-gpu:local .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
