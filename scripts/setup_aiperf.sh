#!/usr/bin/env bash
# Creates .venv-aiperf with NVIDIA AIPerf (PyPI `aiperf`), the second load generator of `make bench TOOL=aiperf`.
# A venv of its own: aiperf pins pillow, psutil, pyzmq and prometheus-client versions that clash with vLLM's.
# Idempotent (~2-3 min the first time, ~1.2 GB); offline except for the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AIPERF_VENV:-.venv-aiperf}
VERSION=0.13.0
STAMP="$VENV/.aiperf-$VERSION"
[[ -f "$STAMP" ]] && exit 0
printf '\n==> [setup-aiperf %s] installing aiperf==%s into %s (~2-3 min)\n' "$(date +%H:%M:%S)" "$VERSION" "$VENV"
[[ -x "$VENV/bin/python" ]] || "${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --progress-bar off "aiperf==$VERSION"
"$VENV/bin/aiperf" --version
touch "$STAMP"
