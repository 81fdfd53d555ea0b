"""Triton Python-backend model that serves vLLM's pooling runner (embeddings) as a decoupled model.

Thin adapter, as vllm_model/1/model.py: Triton request tensors -> `AsyncLLM.encode` -> response tensors, on an
engine event loop in its own thread. Engine settings (model.json + environment) and the response thread are the
generation model's own modules (engine_settings.py, responder.py are links to vllm_model/1). The tensor interface
is vllm_backend's `embedding_request` one (see config.pbtxt and docs/CONTRACT.md), plus the `control_request`
channel (info, health) the frontend uses.
"""

from __future__ import annotations

import locale

# The stub runs Python isolated with the "C" locale; vLLM/torch imports then fail decoding UTF-8 sources.
locale.setlocale(locale.LC_CTYPE, "")

import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from embedding_request import (  # noqa: E402
    EmbeddingRequestError,
    embedding_environ,
    embedding_facts,
    parse_embedding_request,
)
from engine_loop import EngineLoop  # noqa: E402
from engine_settings import cpu_safe_dtype, load_engine_settings  # noqa: E402
from responder import Responder  # noqa: E402


def _scalar_string(request, name: str) -> str | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None or tensor.as_numpy().size == 0:
        return None
    item = tensor.as_numpy().reshape(-1)[0]
    return item.decode("utf-8") if isinstance(item, bytes) else str(item)


def _scalar_bool(request, name: str) -> bool:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return tensor is not None and tensor.as_numpy().size > 0 and bool(tensor.as_numpy().reshape(-1)[0])


def _error(message: str, code_name: str) -> pb_utils.InferenceResponse:
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=error)


class TritonPythonModel:
    """vLLM AsyncLLM (runner "pooling", task "embed") behind Triton's decoupled Python backend."""

    def initialize(self, args: dict[str, str]) -> None:
        self.logger = pb_utils.Logger
        self.model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(self.model_config):
            raise pb_utils.TritonModelException("vllm_embedding must use the decoupled transaction policy")
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        self.settings = load_engine_settings(model_dir, embedding_environ(os.environ), self.model_config)
        self.settings.engine_args.setdefault("runner", "pooling")
        self.responder = Responder(self.logger, pace=False)
        self._engine = None
        self._active: dict[str, asyncio.Task] = {}
        self._engine_loop = EngineLoop("vllm-embedding-loop")
        self._loop = self._engine_loop.loop
        self._engine_loop.start(self._start_engine)
        self.logger.log_info(
            f"[vllm_embedding] engine ready: model={self.settings.engine_args.get('model')} "
            f"served as '{self.settings.served_model_name}', {self.facts}"
        )

    async def _start_engine(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        args, note, warn = cpu_safe_dtype(self.settings.engine_args, current_platform.is_cpu())
        if note:
            (self.logger.log_warn if warn else self.logger.log_info)(f"[vllm_embedding] {note}")
        self.settings.engine_args = args
        self._engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        if "embed" not in await self._engine.get_supported_tasks():
            raise pb_utils.TritonModelException(f"model {args.get('model')} does not support the 'embed' task")
        self.facts = embedding_facts(self._engine.model_config)

    def execute(self, requests) -> None:
        for request in requests:
            asyncio.run_coroutine_threadsafe(self._handle(request), self._loop)
        return None

    def finalize(self) -> None:
        self.logger.log_info("[vllm_embedding] shutting down the engine")
        self._engine_loop.stop(self._shutdown if self._engine is not None else None, self.logger, "vllm_embedding")
        self.responder.stop()

    async def _shutdown(self) -> None:
        for task in list(self._active.values()):
            task.cancel()
        self._engine.shutdown()
        self._engine = None

    async def _handle(self, request) -> None:
        sender = request.get_response_sender()
        try:
            control = _scalar_string(request, "control_request")
            if control is not None:
                await self._control(control, sender)
                return
            raw = _scalar_string(request, "embedding_request")
            if raw is None:
                raise EmbeddingRequestError("input 'embedding_request' is required")
            await self._embed(request, parse_embedding_request(raw), sender)
        except asyncio.CancelledError:
            self.responder.close(sender)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the client
            code_name, message = _classify(exc)
            if code_name == "INTERNAL":
                self.logger.log_error(f"[vllm_embedding] request failed: {exc!r}")
            self.responder.send(sender, _error(message, code_name))

    async def _embed(self, request, parsed, sender) -> None:
        from vllm.pooling_params import PoolingParams

        params = PoolingParams(task="embed", dimensions=parsed.dimensions)
        request_id = uuid.uuid4().hex
        task = asyncio.current_task()
        self._active[request_id] = task
        self.responder.watch(sender, lambda: self._loop.call_soon_threadsafe(task.cancel))
        try:
            final = None
            async for output in self._engine.encode(parsed.prompt, params, request_id):
                final = output
            if final is None:
                raise RuntimeError("the engine returned no output")
            vector = final.outputs.data.tolist()
            tensors = [pb_utils.Tensor("text_output", np.array([json.dumps(vector).encode()], dtype=np.object_))]
            if _scalar_bool(request, "return_num_input_tokens"):
                count = len(final.prompt_token_ids or ())
                tensors.append(pb_utils.Tensor("num_input_tokens", np.array([count], dtype=np.uint32)))
            if _scalar_bool(request, "return_num_output_tokens"):
                tensors.append(pb_utils.Tensor("num_output_tokens", np.array([0], dtype=np.uint32)))
            self.responder.send(sender, pb_utils.InferenceResponse(output_tensors=tensors))
        finally:
            self.responder.unwatch(sender)
            self._active.pop(request_id, None)

    async def _control(self, raw: str, sender) -> None:
        try:
            message = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise EmbeddingRequestError(f"control_request is not valid JSON: {exc}") from None
        op = message.get("op") if isinstance(message, dict) else None
        if op == "info":
            result = {
                "served_model_name": self.settings.served_model_name,
                "model": self.settings.engine_args.get("model"),
                "created": self.settings.created,
                "task": "embed",
                **self.facts,
            }
        elif op == "health":
            started = time.perf_counter()
            await self._engine.check_health()
            result = {"healthy": True, "seconds": round(time.perf_counter() - started, 6)}
        else:
            raise EmbeddingRequestError(f"unknown control op '{op}' (known: info, health)")
        payload = np.array([json.dumps(result).encode("utf-8")], dtype=np.object_)
        self.responder.send(
            sender, pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("control_response", payload)])
        )


def _classify(exc: BaseException) -> tuple[str, str]:
    """Triton error code name and message (the same prefixes the frontend reads from vllm_model)."""
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, EngineDeadError):
        return "UNAVAILABLE", f"engine is dead: {exc}"
    if isinstance(exc, (EmbeddingRequestError, VLLMClientError, ValueError, TypeError)):
        return "INVALID_ARG", str(exc) or exc.__class__.__name__
    return "INTERNAL", f"internal error: {exc.__class__.__name__}: {exc}"
