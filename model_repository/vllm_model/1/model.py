"""Triton Python-backend model that serves vLLM's AsyncLLM as a decoupled, streaming model.

Thin adapter: Triton request tensors -> engine call -> Triton response tensors. The engine runs on an asyncio
event loop in its own thread; `execute()` hands every request to that loop and returns at once. The tensor
interface is compatible with triton-inference-server/vllm_backend (see docs/CONTRACT.md).
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
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from accumulator import OutputAccumulator  # noqa: E402
from engine_loop import EngineLoop  # noqa: E402
from engine_settings import (  # noqa: E402
    OMP_BIND_ENV,
    cpu_lora_slot,
    cpu_safe_dtype,
    cpu_thread_binding,
    load_engine_settings,
    numa_node_count,
    parallel_world_size,
    worker_python_path,
)
from lora_registry import LoraError, LoraRegistry, UnknownLora  # noqa: E402
from placement import EnginePlacement  # noqa: E402
from responder import Responder  # noqa: E402
from sampling_parameters import (  # noqa: E402
    ParameterError,
    apply_generation_defaults,
    check_max_tokens,
    greedy_copies,
    parse_sampling_parameters,
    prompt_tokens_at_most,
    request_parameters_json,
)
from tracing import ENABLED as TRACE  # noqa: E402
from tracing import RING as TRACE_RING  # noqa: E402
from tracing import StreamTrace  # noqa: E402
from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams  # noqa: E402

RETURN_FLAGS = (
    "return_finish_reason",
    "return_cumulative_logprob",
    "return_logprobs",
    "return_num_input_tokens",
    "return_num_output_tokens",
)


class RequestError(ValueError):
    """The request itself is wrong; reported to the client as INVALID_ARG."""


def _triton_error(message: str, code_name: str) -> pb_utils.TritonError:
    code = getattr(pb_utils.TritonError, code_name, None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


def _optional_input(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _scalar_bool(request, name: str, default: bool) -> bool:
    value = _optional_input(request, name)
    if value is None or value.size == 0:
        return default
    return bool(value.reshape(-1)[0])


def _scalar_string(request, name: str) -> str | None:
    value = _optional_input(request, name)
    if value is None or value.size == 0:
        return None
    item = value.reshape(-1)[0]
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"input '{name}' is not valid UTF-8") from None
    return str(item)


@dataclass
class ParsedRequest:
    """Everything the engine call needs, read from one Triton request."""

    prompt: str | dict[str, Any]
    sampling: dict[str, Any]
    lora_name: str | None
    add_special_tokens: bool
    stream: bool
    include_prompt: bool
    return_flags: dict[str, bool]


def parse_request(request, log=None) -> ParsedRequest:
    """Read and validate the request tensors (the model's own check: Triton does not enforce them); `log` gets the
    warnings worth an operator's eye (unknown sampling parameters, once per name)."""
    text = _scalar_string(request, "text_input")
    token_ids = _optional_input(request, "prompt_token_ids")
    if text is None and token_ids is None:
        raise RequestError("input 'text_input' is required (or 'prompt_token_ids')")
    if text is not None and token_ids is not None:
        raise RequestError("give either 'text_input' or 'prompt_token_ids', not both")
    if token_ids is not None:
        ids = [int(t) for t in token_ids.reshape(-1)]
        if not ids:
            raise RequestError("input 'prompt_token_ids' is empty")
        prompt: str | dict[str, Any] = {"prompt_token_ids": ids}
    else:
        prompt = text
    try:
        raw = _scalar_string(request, "sampling_parameters")
        if raw is None:  # as vllm_backend: without the tensor, the Triton request parameters
            raw = request_parameters_json(request.parameters())
        sampling, options = parse_sampling_parameters(raw, log)
    except ParameterError as exc:
        raise RequestError(str(exc)) from None
    stream = _scalar_bool(request, "stream", False)
    # As vllm_backend: the prompt is prepended by default when not streaming.
    exclude = _scalar_bool(request, "exclude_input_in_output", stream)
    flags = {name: _scalar_bool(request, name, False) for name in RETURN_FLAGS}
    return ParsedRequest(
        prompt, sampling, options.get("lora_name"), options.get("add_special_tokens", True), stream, not exclude, flags
    )


class TritonPythonModel:
    """vLLM AsyncLLM behind Triton's decoupled Python backend."""

    def initialize(self, args: dict[str, str]) -> None:
        self.logger = pb_utils.Logger
        self.model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(self.model_config):
            raise pb_utils.TritonModelException("vllm_model must use the decoupled transaction policy")
        model_dir = os.path.join(args["model_repository"], args["model_version"])
        self.settings = load_engine_settings(model_dir, os.environ, self.model_config)
        self.metrics = None
        if self.settings.report_metrics:
            from engine_metrics import EngineMetrics

            self.metrics = EngineMetrics(
                args["model_name"], args["model_version"], self.settings.report_inter_token_latency
            )
        self.loras = LoraRegistry(self.settings.loras, self.settings.lora_capacity)
        # engine request id -> the task that serves it; how many of them stream (the EngineCore placement's load)
        self._active: dict[str, asyncio.Task] = {}
        self._streaming = 0
        self.responder = Responder(self.logger, pace=self.settings.pace_responses)
        self._engine = None
        self._engine_loop = EngineLoop("vllm-engine-loop")
        self._loop = self._engine_loop.loop
        self._engine_loop.start(self._start_engine)
        self.placement = EnginePlacement(self.settings.colocate_engine_core, self._loop, on_cpu=self.on_cpu)
        self.logger.log_info(f"[vllm_model] {self.placement.start()}")
        self.logger.log_info(
            f"[vllm_model] engine ready: model={self.settings.engine_args.get('model')} "
            f"served as '{self.settings.served_model_name}', max_model_len={self.max_model_len}"
        )

    # ---- engine loop (runs in its own thread) ----

    async def _start_engine(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.v1.engine.async_llm import AsyncLLM

        stat_loggers = [self.metrics.stat_logger_factory()] if self.metrics else None
        self.on_cpu = current_platform.is_cpu()
        args, dtype_note, warn = cpu_safe_dtype(self.settings.engine_args, self.on_cpu)
        if dtype_note:
            (self.logger.log_warn if warn else self.logger.log_info)(f"[vllm_model] {dtype_note}")
        args, lora_note = cpu_lora_slot(args, self.on_cpu)
        if lora_note:
            self.logger.log_info(f"[vllm_model] {lora_note}")
        self.settings.engine_args = args
        self._prepare_worker_environment(args)
        engine_args = AsyncEngineArgs(**args)
        self._engine = AsyncLLM.from_engine_args(engine_args, stat_loggers=stat_loggers)
        self.max_model_len = self._engine.model_config.max_model_len
        # The model's generation_config.json defaults (vLLM's `--generation-config auto`; "vllm" turns them off).
        self.generation_defaults = self._engine.model_config.get_diff_sampling_param()
        self.logger.log_info(
            f"[vllm_model] sampling defaults from the model's generation config: {self.generation_defaults or 'none'}"
        )
        self._tokenizer_facts = self._read_tokenizer_facts()
        await self.loras.start(self._engine)

    def _prepare_worker_environment(self, args: dict[str, Any]) -> None:
        """The environment the engine's workers inherit: our modules importable, CPU threads bound per worker."""
        if parallel_world_size(args) < 2 and args.get("distributed_executor_backend") != "ray":
            return
        os.environ["PYTHONPATH"] = worker_python_path(os.environ, os.path.dirname(os.path.abspath(__file__)))
        allowed = os.sched_getaffinity(0)
        binding, note = cpu_thread_binding(args, self.on_cpu, os.environ, allowed, numa_node_count(allowed))
        if binding:
            os.environ[OMP_BIND_ENV] = binding
        if note:
            self.logger.log_info(f"[vllm_model] {note}")

    # ---- Triton entry points ----

    def execute(self, requests) -> None:
        for request in requests:
            asyncio.run_coroutine_threadsafe(self._handle(request), self._loop)
        return None

    def finalize(self) -> None:
        self.logger.log_info("[vllm_model] shutting down the engine")
        self._engine_loop.stop(self._shutdown if self._engine is not None else None, self.logger, "vllm_model")
        self.responder.stop()
        if TRACE:
            TRACE_RING.dump()

    async def _shutdown(self) -> None:
        for task in list(self._active.values()):
            task.cancel()
        self._engine.shutdown()
        self._engine = None
        if self.metrics is not None:
            self.metrics.close()

    # ---- per request ----

    async def _handle(self, request) -> None:
        sender = request.get_response_sender()
        try:
            control = _scalar_string(request, "control_request")
            if control is not None:
                await self._control(control, sender)
                return
            parsed = parse_request(request, self.logger.log_warn)
            # TVO_TRACE=1: per-token stamps of streamed requests, keyed by the client's request id (tracing.py).
            trace = StreamTrace(request.request_id()) if TRACE and parsed.stream else None
            await self._generate(parsed, sender, trace)
        except asyncio.CancelledError:
            self.responder.close(sender)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the client
            code_name, message = _classify(exc)
            if code_name == "INTERNAL":
                self.logger.log_error(f"[vllm_model] request failed: {exc!r}")
            self.responder.send(sender, pb_utils.InferenceResponse(error=_triton_error(message, code_name)))

    def _check_length(self, parsed: ParsedRequest, max_tokens: int | None) -> None:
        """400 for a max_tokens that cannot fit after the prompt; tokenizes only when the bound says it may not."""
        if max_tokens is None or max_tokens + prompt_tokens_at_most(parsed.prompt) <= self.max_model_len:
            return
        if isinstance(parsed.prompt, dict):
            count = len(parsed.prompt["prompt_token_ids"])
        else:
            count = len(
                self._engine.get_tokenizer().encode(parsed.prompt, add_special_tokens=parsed.add_special_tokens)
            )
        check_max_tokens(max_tokens, count, self.max_model_len)

    async def _generate(self, parsed: ParsedRequest, sender, trace: StreamTrace | None = None) -> None:
        kwargs = apply_generation_defaults(parsed.sampling, self.generation_defaults)
        try:
            self._check_length(parsed, kwargs.get("max_tokens"))
        except ParameterError as exc:
            raise RequestError(str(exc)) from None
        # n > 1 at temperature 0: one greedy engine sequence, handed out as n identical ones.
        copies = greedy_copies(kwargs)
        if copies > 1:
            kwargs["n"] = 1
        # The client's own `logprobs` decides what the logprobs output carries (JSON null without it, as
        # vllm_backend). vLLM V1 tracks cumulative_logprob only while it computes logprobs, so a client that asks
        # for the running sum alone gets the sampled token's log-probability computed (logprobs=0), not reported.
        report_logprobs = kwargs.get("logprobs") is not None
        if parsed.return_flags["return_cumulative_logprob"] and not report_logprobs:
            kwargs["logprobs"] = 0
        try:
            structured = kwargs.pop("structured_outputs", None)
            if structured is not None:
                kwargs["structured_outputs"] = StructuredOutputsParams(**structured)
            # Streaming: the new tokens of every step. Otherwise only the finished output: no per-token wake-ups here.
            kind = RequestOutputKind.DELTA if parsed.stream else RequestOutputKind.FINAL_ONLY
            params = SamplingParams(**kwargs, output_kind=kind)
        except ValueError as exc:  # the keys and types are checked on parsing; vLLM's VLLMValidationError is a 400 too
            raise RequestError(str(exc)) from None
        lora_request = self.loras.acquire(parsed.lora_name)
        request_id = uuid.uuid4().hex
        accumulator = OutputAccumulator(
            params.n * copies,
            copies=copies,
            stream=parsed.stream,
            include_prompt=parsed.include_prompt,
            report_logprobs=report_logprobs,
            prompt_text=parsed.prompt if isinstance(parsed.prompt, str) else None,
            decode=self._decode,
        )
        task = asyncio.current_task()
        self._active[request_id] = task
        if parsed.stream:
            self._streaming += 1
            self.placement.update(self._streaming)
        # Cancelling the task makes generate() abort the engine request.
        self.responder.watch(sender, lambda: self._loop.call_soon_threadsafe(task.cancel))
        try:
            tokenization = None if parsed.add_special_tokens else {"add_special_tokens": False}
            outputs = self._engine.generate(
                parsed.prompt, params, request_id, lora_request=lora_request, tokenization_kwargs=tokenization
            )
            async for output in outputs:
                index = 0 if trace is None else trace.output(output)
                step = accumulator.fold(output)
                if step is not None:
                    self.responder.step(sender, step, parsed.return_flags, stream=True, trace=trace, index=index)
            step = accumulator.final()
            if step is not None:
                self.responder.step(sender, step, parsed.return_flags, stream=False)
            elif not accumulator.finished:
                self.responder.close(sender)  # the engine ended the request without a finished output
        finally:
            self.responder.unwatch(sender)
            self._active.pop(request_id, None)
            if parsed.stream:
                self._streaming -= 1
                self.placement.update(self._streaming)
            await self.loras.release(self._engine, parsed.lora_name)

    def _decode(self, token_ids: list[int]) -> str:
        return self._engine.get_tokenizer().decode(token_ids)

    # ---- control channel: model facts, health, LoRA management ----

    async def _control(self, raw: str, sender) -> None:
        try:
            message = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestError(f"control_request is not valid JSON: {exc}") from None
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise RequestError("control_request must be a JSON object with a string 'op'")
        op = message["op"]
        if op == "info":
            result = self._info()
        elif op == "health":
            started = time.perf_counter()
            await self._engine.check_health()
            result = {"healthy": True, "seconds": round(time.perf_counter() - started, 6)}
        elif op == "stats":
            result = {
                "active_requests": len(self._active),
                "streaming_requests": self._streaming,
                "engine_unfinished_requests": self._engine.output_processor.get_num_unfinished_requests(),
                "engine_core_colocated": self.placement.colocated,
                "engine_core_placement_switches": self.placement.switches,
            }
        elif op == "load_lora":
            await self.loras.load(self._engine, message.get("lora_name"), message.get("lora_path"))
            result = {"loaded": message.get("lora_name"), **self._info()}
        elif op == "unload_lora":
            await self.loras.unload(self._engine, message.get("lora_name"))
            result = {"unloaded": message.get("lora_name"), **self._info()}
        elif op in ("tokenize", "detokenize"):
            result = self._tokenizer_op(op, message)
        else:
            raise RequestError(
                f"unknown control op '{op}' (known: info, health, stats, load_lora, unload_lora, tokenize, detokenize)"
            )
        payload = np.array([json.dumps(result).encode("utf-8")], dtype=np.object_)
        response = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("control_response", payload)])
        self.responder.send(sender, response)

    def _info(self) -> dict[str, Any]:
        return {
            "served_model_name": self.settings.served_model_name,
            "model": self.settings.engine_args.get("model"),
            "max_model_len": self.max_model_len,
            "loras": self.loras.names(),
            "created": self.settings.created,
            "generation_defaults": self.generation_defaults,
            "vllm_version": _vllm_version(),
            **self._tokenizer_facts,
        }

    def _tokenizer_op(self, op: str, message: dict[str, Any]) -> dict[str, Any]:
        """tokenize: {"prompt", "add_special_tokens"} -> {"tokens"} as the engine tokenizes that prompt (so counts
        equal num_input_tokens); with "return_token_strs", also each token's text. detokenize: {"tokens"} ->
        {"prompt"}."""
        tokenizer = self._engine.get_tokenizer()
        if op == "tokenize":
            prompt, add_special = message.get("prompt"), message.get("add_special_tokens", True)
            if not isinstance(prompt, str) or not isinstance(add_special, bool):
                raise RequestError("tokenize needs a string 'prompt' and a boolean 'add_special_tokens'")
            tokens = tokenizer.encode(prompt, add_special_tokens=add_special)
            result: dict[str, Any] = {"tokens": tokens}
            if message.get("return_token_strs"):
                result["token_strs"] = tokenizer.convert_ids_to_tokens(tokens)
            return result
        tokens = message.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise RequestError("detokenize needs 'tokens', a list of token ids")
        vocab = len(tokenizer)
        bad = [t for t in tokens if not 0 <= t < vocab]
        if bad:
            raise RequestError(f"token id {bad[0]} is out of range (vocabulary size {vocab})")
        return {"prompt": tokenizer.decode(tokens)}

    def _read_tokenizer_facts(self) -> dict[str, Any]:
        """What a client needs to render chat prompts as the model expects: the template and special tokens."""
        try:
            tokenizer = self._engine.get_tokenizer()
        except Exception:  # noqa: BLE001 - e.g. skip_tokenizer_init
            return {"chat_template": None, "special_tokens": {}}
        special = getattr(tokenizer, "special_tokens_map", {}) or {}
        return {
            "chat_template": getattr(tokenizer, "chat_template", None),
            "special_tokens": {k: v for k, v in special.items() if isinstance(v, (str, list))},
        }


def _vllm_version() -> str:
    from vllm import __version__

    return __version__


def _classify(exc: BaseException) -> tuple[str, str]:
    """Triton error code name and message for a failed request."""
    from vllm.exceptions import VLLMClientError
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, UnknownLora):
        return "NOT_FOUND", str(exc)
    if isinstance(exc, EngineDeadError):
        return "UNAVAILABLE", f"engine is dead: {exc}"
    # The request's own fault: our checks, and the engine's validation (vLLM raises ValueError, or its client
    # errors, for a request it refuses, and its server answers 400 for them). Anything else (TypeError,
    # AttributeError, KeyError, ...) is a fault of this code or the engine's: a 500, logged.
    if isinstance(exc, (RequestError, LoraError, VLLMClientError, ValueError)):
        return "INVALID_ARG", str(exc) or exc.__class__.__name__
    return "INTERNAL", f"internal error: {exc.__class__.__name__}: {exc}"
