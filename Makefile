# Two commands do everything on a fresh machine: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup serve test test-unit test-integration lint models bench clean

setup:
	@bash scripts/setup.sh

serve: setup
	@$(PY) -m launcher.serve

models: setup
	@$(PY) -m tools.build_tiny_model --out .models/tiny
	@$(PY) -m tools.build_lora_adapters --base .models/tiny --out .models/tiny-lora

test: setup models
	@mkdir -p .run && $(PY) -m pytest -ra --basetemp=.run/pytest $(PYTEST_ARGS)

test-unit: setup
	@$(PY) -m pytest -ra -m "not integration" $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup models
	@$(PY) -m bench.run $(if $(QUICK),--quick,)

.PHONY: soak
soak: setup models
	@$(PY) -m tools.soak $(SOAK_ARGS)

clean:
	rm -rf .run
