"""The only module that speaks tritonclient: one gRPC channel, streaming generate(), control calls, errors.

Each generate() is one decoupled request over its own bidirectional stream on the shared channel. Leaving the
iteration early (client gone, task cancelled) cancels the gRPC call, which cancels the Triton request, which
aborts the vLLM request in the model.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2, service_pb2_grpc

from frontend.tracing import ENABLED as TRACE
from frontend.tracing import RING as TRACE_RING

logger = logging.getLogger("frontend.triton")

_RETURN_FLAGS = ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens")


class TritonError(Exception):
    """A failure talking to Triton or reported by the model. `kind` says how a client should see it."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.message = message
        # invalid: the request is wrong; not_found: unknown adapter; unavailable: Triton/engine not serving;
        # internal: a bug.
        self.kind = kind


def classify_model_error(message: str) -> str:
    """The model reports errors as text only (gRPC stream errors carry no code); its prefixes are stable."""
    lowered = message.lower()
    if lowered.startswith("unknown lora adapter"):
        return "not_found"
    if lowered.startswith("engine is dead"):
        return "unavailable"
    if lowered.startswith("internal error"):
        return "internal"
    # Triton's own errors when the model is not there or its stub died.
    if lowered.startswith("request for unknown model") or ("stub process" in lowered and "not healthy" in lowered):
        return "unavailable"
    if lowered.startswith("model '") and lowered.endswith("is not ready"):
        return "unavailable"
    return "invalid"


@dataclass
class GenerateRequest:
    """One prompt's generation request, in the model's terms."""

    prompt: str | list[int]
    sampling_parameters: dict[str, Any]
    stream: bool
    include_prompt: bool = False
    logprobs: bool = False


@dataclass
class GenerationChunk:
    """One response of the model: per sequence, the text delta (or the whole text when not streaming)."""

    texts: list[str]
    finish_reasons: list[str | None]
    num_input_tokens: int
    num_output_tokens: list[int]
    logprobs: list[list[dict[str, Any]]] | None = None
    final: bool = False
    prompt_index: int = 0
    trace: tuple[str, int] | None = None  # TVO_TRACE=1 only: (Triton request id, response index) for tracing.py


def _tensor(name: str, datatype: str, shape: list[int]) -> service_pb2.ModelInferRequest.InferInputTensor:
    return service_pb2.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)


def _bytes_elements(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def _add_bytes(request: service_pb2.ModelInferRequest, name: str, value: str) -> None:
    request.inputs.append(_tensor(name, "BYTES", [1]))
    request.raw_input_contents.append(_bytes_elements([value.encode("utf-8")]))


def _add_bool(request: service_pb2.ModelInferRequest, name: str, value: bool) -> None:
    request.inputs.append(_tensor(name, "BOOL", [1]))
    request.raw_input_contents.append(b"\x01" if value else b"\x00")


def _new_request(model: str, request_id: str = "") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    # Ask Triton to flag the last response (and to send one even when the model's final signal has no data).
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    return request


def build_request(model: str, request: GenerateRequest, request_id: str = "") -> service_pb2.ModelInferRequest:
    """The model's input tensors for a generation request (the contract in docs/CONTRACT.md)."""
    message = _new_request(model, request_id)
    if isinstance(request.prompt, str):
        _add_bytes(message, "text_input", request.prompt)
    else:
        message.inputs.append(_tensor("prompt_token_ids", "INT64", [len(request.prompt)]))
        message.raw_input_contents.append(np.asarray(request.prompt, dtype="<i8").tobytes())
    _add_bool(message, "stream", request.stream)
    _add_bytes(message, "sampling_parameters", json.dumps(request.sampling_parameters))
    _add_bool(message, "exclude_input_in_output", not request.include_prompt)
    for flag in _RETURN_FLAGS:
        _add_bool(message, flag, True)
    if request.logprobs:
        _add_bool(message, "return_logprobs", True)
    return message


def build_embedding_request(
    model: str, prompt: str | list[int], dimensions: int | None, request_id: str = ""
) -> service_pb2.ModelInferRequest:
    """vllm_backend's embedding request: one `embedding_request` JSON string (as Triton's OpenAI frontend sends)."""
    message = _new_request(model, request_id)
    pooling = {} if dimensions is None else {"dimensions": [dimensions]}
    _add_bytes(message, "embedding_request", json.dumps({"input": prompt, "pooling_params": pooling}))
    _add_bool(message, "return_num_input_tokens", True)
    return message


def _decode_bytes(raw: bytes) -> list[str]:
    values, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        values.append(raw[offset : offset + length].decode("utf-8", errors="replace"))
        offset += length
    return values


def response_outputs(response: service_pb2.ModelInferResponse) -> dict[str, Any]:
    """Output name -> list of values, decoded from the response's raw contents."""
    outputs: dict[str, Any] = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=False):
        if tensor.datatype == "BYTES":
            outputs[tensor.name] = _decode_bytes(raw)
        else:
            outputs[tensor.name] = np.frombuffer(raw, dtype=_NUMPY_TYPES[tensor.datatype]).tolist()
    return outputs


_NUMPY_TYPES = {"UINT32": "<u4", "FP32": "<f4", "INT64": "<i8", "BOOL": "?", "INT32": "<i4"}


def parse_chunk(response: service_pb2.ModelInferResponse, logprobs: bool) -> GenerationChunk:
    outputs = response_outputs(response)
    texts = outputs.get("text_output", [])
    # The model sends "None" (as vllm_backend) for a sequence that has not finished.
    reasons = [None if r in ("", "None") else r for r in outputs.get("finish_reason", [])] or [None] * len(texts)
    num_input = outputs.get("num_input_tokens") or [0]
    parsed_logprobs = None
    if logprobs:
        parsed_logprobs = [json.loads(text) or [] for text in outputs.get("logprobs", [])]  # null: none asked
    return GenerationChunk(
        texts=texts,
        finish_reasons=reasons,
        num_input_tokens=int(num_input[0]),
        num_output_tokens=outputs.get("num_output_tokens") or [0] * len(texts),
        logprobs=parsed_logprobs,
    )


def _is_final(response: service_pb2.ModelInferResponse) -> bool:
    parameter = response.parameters.get("triton_final_response")
    return bool(parameter is not None and parameter.bool_param)


def _rpc_error(error: grpc.RpcError) -> TritonError:
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return TritonError(f"Triton is unavailable ({code}): {details}", "unavailable")


class TritonClient:
    """One gRPC channel to one Triton server, serving one model."""

    def __init__(self, url: str, model: str) -> None:
        self.url = url
        self.model = model
        self._channel = grpc.aio.insecure_channel(url, options=_CHANNEL_OPTIONS)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        self._info: dict[str, Any] | None = None

    async def close(self) -> None:
        await self._channel.close()

    async def _stream(self, message: service_pb2.ModelInferRequest) -> AsyncIterator[service_pb2.ModelInferResponse]:
        """One request on its own bidirectional stream; yields responses up to the final one.

        Leaving early (or being cancelled) cancels the call, which Triton passes on to the model.
        """

        async def one_request():
            yield message

        call = self._stub.ModelStreamInfer(one_request())
        finished = False
        try:
            while True:
                try:
                    stream_response = await call.read()
                except grpc.RpcError as exc:
                    raise _rpc_error(exc) from None
                if stream_response is grpc.aio.EOF:
                    raise TritonError("Triton closed the stream before the final response", "unavailable")
                if stream_response.error_message:
                    finished = True
                    text = stream_response.error_message
                    raise TritonError(text, classify_model_error(text))
                response = stream_response.infer_response
                finished = _is_final(response)
                yield response
                # A read of an already-buffered message does not suspend: without this, one fast stream can hold the
                # event loop for its whole length and starve every other connection (probes time out).
                await asyncio.sleep(0)
                if finished:
                    return
        finally:
            if not finished:
                call.cancel()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerationChunk]:
        """Yield the model's responses until the final one; errors raise TritonError."""
        message = build_request(self.model, request, uuid.uuid4().hex)
        if TRACE and request.stream:
            async for chunk in self._traced(message, request.logprobs):
                yield chunk
            return
        async for response in self._stream(message):
            if response.outputs:
                chunk = parse_chunk(response, request.logprobs)
                chunk.final = _is_final(response)
                yield chunk

    async def _traced(self, message: service_pb2.ModelInferRequest, logprobs: bool) -> AsyncIterator[GenerationChunk]:
        """generate() with TVO_TRACE=1: each response stamped when read and once parsed."""
        index = 0
        async for response in self._stream(message):
            if response.outputs:
                TRACE_RING.stamp(message.id, index, "read")
                chunk = parse_chunk(response, logprobs)
                chunk.final = _is_final(response)
                chunk.trace = (message.id, index)
                TRACE_RING.stamp(message.id, index, "parsed")
                index += 1
                yield chunk

    async def embed(self, prompt: str | list[int], dimensions: int | None = None) -> tuple[list[float], int]:
        """One input's vector and its prompt token count, from an embedding model (vllm_backend's interface)."""
        message = build_embedding_request(self.model, prompt, dimensions, uuid.uuid4().hex)
        async for response in self._stream(message):
            if response.outputs:
                outputs = response_outputs(response)
                return json.loads(outputs["text_output"][0]), int((outputs.get("num_input_tokens") or [0])[0])
        raise TritonError("the model gave no embedding", "internal")

    async def control(self, op: str, **fields: Any) -> dict[str, Any]:
        """Call the model's control channel (info, health, load_lora, unload_lora)."""
        message = _new_request(self.model)
        _add_bytes(message, "control_request", json.dumps({"op": op, **fields}))
        async for response in self._stream(message):
            if response.outputs:
                return json.loads(response_outputs(response)["control_response"][0])
        raise TritonError("the model gave no answer to a control request", "internal")

    async def info(self, refresh: bool = False) -> dict[str, Any]:
        """Model facts (served name, max_model_len, LoRA adapters); cached until refreshed."""
        if self._info is None or refresh:
            self._info = await self.control("info")
        return self._info

    async def is_ready(self) -> bool:
        """Triton reachable, the model ready, and the engine healthy."""
        try:
            ready = await self._stub.ModelReady(service_pb2.ModelReadyRequest(name=self.model), timeout=5)
            if not ready.ready:
                return False
            await asyncio.wait_for(self.control("health"), timeout=5)
            return True
        except (TimeoutError, TritonError, grpc.RpcError, OSError) as exc:
            logger.debug("readiness check failed: %s", exc)
            return False


_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Reconnect quickly after Triton restarts.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
