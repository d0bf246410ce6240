# Two entry points (README): `make serve` and `make test`. Each installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install model serve test lint bench clean

install:
	@bash scripts/install.sh

model: install
	@$(PY) -m vsteer.cli model default

serve: model
	$(PY) -m vsteer.cli serve --host 127.0.0.1 --port 8000 $(ARGS)

test: model
	$(VENV)/bin/ruff check .
	TRITON_INTERPRET=1 $(PY) -m pytest tests/triton_interp -q $(PYTEST_ARGS)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: model
	$(PY) bench/steer_overhead.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
