# GPU image: NVIDIA's Triton container (tritonserver + Python backend on PATH) with vLLM and this project.
# Target tag: nvcr.io/nvidia/tritonserver:25.10-py3 (Triton 2.62, Python 3.12, CUDA 13). Not built on the CPU dev box.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.10-py3
FROM ${TRITON_IMAGE}

ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_CACHE_DIR=1 \
    VLLM_NO_USAGE_STATS=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/triton-vllm-openai
COPY pyproject.toml README.md ./
COPY frontend ./frontend
COPY launcher ./launcher
COPY tools ./tools
COPY model_repository ./model_repository

# vLLM (CUDA build) plus the frontend; the container's own tritonserver is used (found on PATH).
RUN python3 -m pip install ".[gpu]" \
 && sed -i 's/kind: KIND_CPU/kind: KIND_MODEL/' model_repository/vllm_model/config.pbtxt

# Triton HTTP, gRPC, metrics; the OpenAI frontend.
EXPOSE 8000 8001 8002 9000

# MODEL: a hub id or a mounted path, e.g. -e MODEL=Qwen/Qwen2.5-1.5B-Instruct (needs network or a mounted HF cache).
ENV MODEL=HuggingFaceTB/SmolLM2-135M-Instruct PORT=9000
# model.json runs eager for CPU (see README); on a GPU let vLLM compile and capture CUDA graphs.
ENV ENGINE_ARGS='{"enforce_eager": false, "gpu_memory_utilization": 0.85}'

CMD ["python3", "-m", "launcher.serve"]
