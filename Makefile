# Two commands do everything on a fresh machine: `make serve` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup serve test test-unit test-integration lint models bench clean cluster test-cluster test-vllm-backend

setup:
	@bash scripts/setup.sh

serve: setup
	@$(PY) -m launcher.serve

models: setup
	@$(PY) -m tools.build_tiny_model --out .models/tiny
	@$(PY) -m tools.build_lora_adapters --base .models/tiny --out .models/tiny-lora
	@$(PY) -m tools.build_tiny_embedding_model --out .models/tiny-embed

test: setup models
	@mkdir -p .run && $(PY) -m pytest -ra --basetemp=.run/pytest --ignore=tests/integration/cluster $(PYTEST_ARGS)

# N replicas (REPLICAS, default 2) behind vllm-router; prints the one URL to use.
cluster: setup
	@$(PY) -m launcher.cluster

# Two replicas behind the router: SDK, spreading, rolling restart, SIGKILL, autoscaling signal (Prometheus).
test-cluster: setup models
	@bash scripts/install_prometheus.sh
	@mkdir -p .run && $(PY) -m pytest -ra -s --basetemp=.run/pytest-cluster tests/integration/cluster $(PYTEST_ARGS)

# vllm_backend's repository tests (explicit model control, ensemble, broken models): a server of their own, slow.
test-vllm-backend: setup models
	@mkdir -p .run && VLLM_BACKEND_REPOSITORY_TESTS=1 $(PY) -m pytest -ra --basetemp=.run/pytest-vb \
		tests/integration/test_vllm_backend_repository.py $(PYTEST_ARGS)

test-unit: setup
	@$(PY) -m pytest -ra -m "not integration" $(PYTEST_ARGS)

lint: setup
	@$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup models
	@$(PY) -m bench.run $(if $(QUICK),--quick,) $(if $(TOOL),--tool $(TOOL),)

.PHONY: soak
soak: setup models
	@$(PY) -m tools.soak $(SOAK_ARGS)

clean:
	rm -rf .run

# Deployment (README "Deploy"). `make image`: the CPU image triton-vllm-openai:cpu (Debian packages docker.io and
# mmdebstrap installed if missing; a dockerd of our own started and stopped if none answers).
.PHONY: image test-image test-deploy
image:
	@bash scripts/build_image.sh; rc=$$?; bash scripts/image_docker.sh down; exit $$rc

# Slow (~15 min with a cold Docker cache, ~2 min with a built image): the container answers the openai SDK and `docker stop` drains it.
test-image: setup image
	@export DOCKER_HOST=$$(bash scripts/image_docker.sh up) && TVO_IMAGE_TEST=1 $(PY) -m pytest -ra -s \
	  tests/deploy/test_image.py $(PYTEST_ARGS); rc=$$?; bash scripts/image_docker.sh down; exit $$rc

# Fast (seconds; also part of `make test`): the Kubernetes overlays render and validate, Dockerfiles lint.
test-deploy: setup
	@$(PY) -m pytest -ra tests/deploy $(PYTEST_ARGS)
