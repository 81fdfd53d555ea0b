# GPU image: NVIDIA's Triton container (tritonserver + Python backend on PATH) with vLLM's CUDA build and this project.
# Same layout as Dockerfile.cpu: /opt/triton-vllm-openai, uid 1000, tini, `python3 -m launcher.serve`, the same env
# knobs, ports and HEALTHCHECK. Target tag: nvcr.io/nvidia/tritonserver:25.10-py3 (Triton 2.62, Python 3.12).
# Not built on the CPU dev box (no GPU, no NGC registry): only linted and checked by tests/deploy.
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.10-py3
FROM ${TRITON_IMAGE}

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/triton-vllm-openai
COPY pyproject.toml README.md ./
COPY frontend ./frontend
COPY launcher ./launcher
COPY tools ./tools
# vLLM (CUDA build, pinned in pyproject's gpu extra: the V1 AsyncLLM API model.py uses) plus the frontend; the
# container's own tritonserver is used (found on PATH).
RUN python3 -m pip install --progress-bar off -e ".[gpu]"
COPY model_repository ./model_repository
COPY docker/healthcheck.py ./docker/healthcheck.py
# The model runs on the GPU; .run and .cache are written by the server. NGC images already have uid 1000.
RUN sed -i 's/kind: KIND_CPU/kind: KIND_MODEL/' model_repository/vllm_model/config.pbtxt \
 && (id -u 1000 >/dev/null 2>&1 || useradd --uid 1000 --user-group --shell /usr/sbin/nologin app) \
 && mkdir -p .run .cache /home/app && chown 1000:1000 .run .cache /home/app

ENV PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8 \
    HOME=/home/app \
    VLLM_NO_USAGE_STATS=1 \
    PORT=9000 \
    TRITON_HTTP_PORT=8000 \
    TRITON_GRPC_PORT=8001 \
    TRITON_METRICS_PORT=8002
# MODEL: a hub id or a mounted path, e.g. -e MODEL=Qwen/Qwen2.5-1.5B-Instruct (needs network or a mounted HF cache).
# model.json runs eager for CPU (see README); on a GPU let vLLM compile and capture CUDA graphs.
ENV MODEL=HuggingFaceTB/SmolLM2-135M-Instruct \
    ENGINE_ARGS='{"enforce_eager": false, "gpu_memory_utilization": 0.85}'
USER 1000:1000
# OpenAI API (PORT); Triton HTTP, gRPC, metrics (engine metrics such as vllm:num_requests_waiting).
EXPOSE 9000 8000 8001 8002
# Ready means /health/ready: Triton reachable, the model loaded, the engine healthy. The engine start takes minutes.
HEALTHCHECK --start-period=600s --interval=15s --timeout=10s --retries=3 CMD ["python3", "docker/healthcheck.py"]
ENTRYPOINT ["tini", "--"]
CMD ["python3", "-m", "launcher.serve"]
