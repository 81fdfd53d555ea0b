"""Clients that turn one benchmark request into one generation on a running server.

- `HttpCompletions`: the one OpenAI-API load generator, for `vllm serve` and for our frontend alike: httpx,
  `POST /v1/completions` with the prompt as token ids, SSE streaming, exact token counts from
  `stream_options.include_usage`.
- `TritonGrpc`: Triton's gRPC streaming endpoint straight to `vllm_model` (the contract in docs/CONTRACT.md),
  built with the frontend's own request encoder so both speak exactly the same tensors.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import grpc
import httpx
from tritonclient.grpc import service_pb2_grpc

from bench.load import RequestRecord, Send
from frontend.triton import GenerateRequest, build_request, parse_chunk


def sampling(output_len: int) -> dict[str, Any]:
    """The sampling settings of every request: greedy, a fixed number of tokens."""
    return {"max_tokens": output_len, "temperature": 0, "ignore_eos": True}


class HttpCompletions:
    """An OpenAI `/v1/completions` client over one pooled httpx connection pool."""

    def __init__(self, base_url: str, model: str, output_len: int, max_connections: int) -> None:
        self.url = f"{base_url}/v1/completions"
        self.model = model
        self.output_len = output_len
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(300.0, connect=10.0),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    def make_send(self, stream: bool) -> Send:
        async def send(prompt: list[int], record: RequestRecord) -> None:
            body: dict[str, Any] = {
                "model": self.model,
                "prompt": prompt,
                "stream": stream,
                **sampling(self.output_len),
            }
            if stream:
                body["stream_options"] = {"include_usage": True}
            async with self.client.stream("POST", self.url, json=body) as response:
                if response.status_code != 200:
                    text = (await response.aread()).decode("utf-8", errors="replace")
                    raise RuntimeError(f"HTTP {response.status_code}: {text[:300]}")
                if not stream:
                    data = json.loads(await response.aread())
                    record.output_tokens = int(data["usage"]["completion_tokens"])
                    return
                async for line in response.aiter_lines():
                    now = time.perf_counter()
                    if not line.startswith("data: "):
                        continue
                    payload = line[len("data: ") :]
                    if payload == "[DONE]":
                        break
                    data = json.loads(payload)
                    if "error" in data:
                        raise RuntimeError(f"stream error: {data['error']}")
                    choices = data.get("choices")
                    if choices and choices[0].get("text"):
                        record.chunk_times.append(now)
                    if data.get("usage"):
                        record.output_tokens = int(data["usage"]["completion_tokens"])

        return send


class TritonGrpc:
    """Triton's `ModelStreamInfer`, one bidirectional stream per request on one shared channel (as the frontend)."""

    def __init__(self, url: str, output_len: int, model: str = "vllm_model") -> None:
        self.model = model
        self.output_len = output_len
        self.channel = grpc.aio.insecure_channel(
            url,
            options=[("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1)],
        )
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    async def aclose(self) -> None:
        await self.channel.close()

    def make_send(self, stream: bool) -> Send:
        async def send(prompt: list[int], record: RequestRecord) -> None:
            generate = GenerateRequest(prompt=prompt, sampling_parameters=sampling(self.output_len), stream=stream)
            message = build_request(self.model, generate, uuid.uuid4().hex)

            async def requests():
                yield message

            call = self.stub.ModelStreamInfer(requests())
            finished = False
            try:
                while not finished:
                    reply = await call.read()
                    now = time.perf_counter()
                    if reply is grpc.aio.EOF:
                        raise RuntimeError("Triton closed the stream before the final response")
                    if reply.error_message:
                        finished = True
                        raise RuntimeError(f"Triton error: {reply.error_message}")
                    response = reply.infer_response
                    final = response.parameters.get("triton_final_response")
                    finished = bool(final is not None and final.bool_param)
                    if response.outputs:
                        chunk = parse_chunk(response, logprobs=False)
                        record.output_tokens += sum(chunk.num_output_tokens)
                        if stream and chunk.texts and chunk.texts[0]:
                            record.chunk_times.append(now)
            finally:
                if not finished:
                    call.cancel()

        return send
