#!/usr/bin/env bash
# `make image`: build the CPU image (Dockerfile.cpu) as $IMAGE (default triton-vllm-openai:cpu).
# OFFLINE=1 (default here, where no registry serves images): build the base image locally if it is missing
# (mmdebstrap a Debian bookworm rootfs, `docker import` it under the FROM name) and install the Python packages from
# a wheelhouse downloaded on this host. OFFLINE=0: plain `docker build` (base pulled, packages from the index).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-triton-vllm-openai:cpu}
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
OFFLINE=${OFFLINE:-1}
step() { printf '\n==> [image %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
bash scripts/setup_image_tools.sh
DOCKER_HOST=$(bash scripts/image_docker.sh up)
export DOCKER_HOST
args=(--network host -f Dockerfile.cpu -t "$IMAGE" --build-arg "BASE_IMAGE=$BASE_IMAGE")
if [[ "$OFFLINE" == 1 ]]; then
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    step "building the base image $BASE_IMAGE locally (mmdebstrap bookworm)"
    mmdebstrap --variant=apt --quiet bookworm - | docker import - "$BASE_IMAGE"
  fi
  step "downloading the wheelhouse (docker/wheelhouse)"
  bash scripts/image_wheelhouse.sh
  args+=(--build-arg PIP_NO_INDEX=1)
fi
step "docker build ${args[*]} ."
started=$(date +%s)
DOCKER_BUILDKIT=0 docker build "${args[@]}" .
step "built $IMAGE in $(($(date +%s) - started)) s: $(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec)"
