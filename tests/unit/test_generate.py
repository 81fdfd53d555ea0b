"""model.py's request path without the stack, the way vLLM tests its serving code: vLLM's own `RequestOutput`s and
`CompletionOutput`s, built by hand, from a stand-in engine; the Steps `_generate` hands to the response path are
recorded and encoded with the real `build_response` (Triton's pb_utils is a stand-in, as in test_responder.py)."""

from __future__ import annotations

import asyncio
import json
import types
from typing import Any

import numpy as np
import pytest
from vllm.exceptions import VLLMValidationError
from vllm.logprobs import Logprob
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.exceptions import EngineDeadError

from tests.unit import fake_pb_utils
from tests.unit.fake_pb_utils import InferenceResponse, Tensor, TritonError

FLAGS = ("return_finish_reason", "return_cumulative_logprob", "return_logprobs", "return_num_input_tokens")
ALL_FLAGS = {name: True for name in (*FLAGS, "return_num_output_tokens")}
PROMPT_IDS = [5, 6, 7]


@pytest.fixture(scope="module")
def model():
    with fake_pb_utils.model_module("model") as module:
        yield module


class Recorder:
    """Stands in for the Responder: records what the model hands to the response path."""

    def __init__(self) -> None:
        self.steps: list[tuple[Any, bool]] = []  # (Step, streamed)
        self.sent: list[InferenceResponse] = []
        self.closed = 0

    def step(self, sender, step, return_flags, stream: bool, trace=None, index: int = 0) -> None:
        self.steps.append((step, stream))

    def send(self, sender, response) -> None:
        self.sent.append(response)

    def close(self, sender) -> None:
        self.closed += 1

    def watch(self, sender, on_cancel) -> None:
        pass

    def unwatch(self, sender) -> None:
        pass


class Tokenizer:
    def decode(self, ids: list[int]) -> str:
        return "".join(f"<{i}>" for i in ids)


class Engine:
    """AsyncLLM's generate(): yields the given outputs (or raises), records the SamplingParams it got."""

    def __init__(self, outputs: list[RequestOutput] | BaseException) -> None:
        self.outputs = outputs
        self.params = None

    def get_tokenizer(self) -> Tokenizer:
        return Tokenizer()

    async def generate(self, prompt, params, request_id, lora_request=None, tokenization_kwargs=None):
        self.params = params
        if isinstance(self.outputs, BaseException):
            raise self.outputs
        for output in self.outputs:
            yield output


def completion(index: int, text: str, ids: list[int], finish=None, cumulative=None, logprobs=None):
    return CompletionOutput(
        index=index, text=text, token_ids=ids, cumulative_logprob=cumulative, logprobs=logprobs, finish_reason=finish
    )


def entry(logprob: float, rank: int, token: str) -> dict[str, Any]:
    """One token's entry in the logprobs output, vllm_backend's shape."""
    return {"logprob": logprob, "rank": rank, "decoded_token": token}


def output(completions: list[CompletionOutput], finished: bool, prompt_ids: list[int] | None = PROMPT_IDS):
    return RequestOutput(
        request_id="r", prompt=None, prompt_token_ids=prompt_ids, prompt_logprobs=None, outputs=completions,
        finished=finished,
    )  # fmt: skip


def make_model(model, outputs, warnings: list[str] | None = None):
    from lora_registry import LoraRegistry
    from placement import EnginePlacement

    instance = model.TritonPythonModel.__new__(model.TritonPythonModel)
    warn = print if warnings is None else warnings.append
    instance.logger = types.SimpleNamespace(log_info=print, log_warn=warn, log_error=print)
    instance.generation_defaults = {}
    instance.max_model_len = 1024
    instance._active = {}
    instance._streaming = 0
    instance.placement = EnginePlacement("never")
    instance.loras = LoraRegistry({}, 0)
    instance.responder = Recorder()
    instance._engine = Engine(outputs)
    return instance


def generate(model, outputs, sampling=None, stream=False, include_prompt=None, prompt="hi", flags=None, placement=None):
    instance = make_model(model, outputs)
    if placement is not None:
        instance.placement = placement
    parsed = model.ParsedRequest(
        prompt=prompt,
        sampling=dict(sampling or {}),
        lora_name=None,
        add_special_tokens=True,
        stream=stream,
        include_prompt=(not stream) if include_prompt is None else include_prompt,
        return_flags={**dict.fromkeys(ALL_FLAGS, False), **(flags or ALL_FLAGS)},
    )

    async def run() -> None:
        instance._loop = asyncio.get_running_loop()
        await instance._generate(parsed, sender=object())

    asyncio.run(run())
    return instance


def decoded(step, flags=ALL_FLAGS) -> dict[str, Any]:
    """A Step as the client receives it: the response's tensors, through the real build_response."""
    from responder import build_response

    tensors = build_response(step, flags).tensors
    result: dict[str, Any] = {"text": [t.decode() for t in tensors["text_output"]], "final": step.final}
    if "finish_reason" in tensors:
        result["finish"] = [r.decode() for r in tensors["finish_reason"]]
    if "num_input_tokens" in tensors:
        result["input"] = int(tensors["num_input_tokens"][0])
    if "num_output_tokens" in tensors:
        result["output"] = [int(c) for c in tensors["num_output_tokens"]]
    if "cumulative_logprob" in tensors:
        result["cumulative"] = [round(float(c), 3) for c in tensors["cumulative_logprob"]]
    if "logprobs" in tensors:
        result["logprobs"] = [json.loads(x) for x in tensors["logprobs"]]
    return result


def responses(instance, flags=ALL_FLAGS) -> list[dict[str, Any]]:
    return [decoded(step, flags) for step, _ in instance.responder.steps]


# ---- streaming ----


class PlacementLoad:
    """Stands in for EnginePlacement: records the load `_generate` reports to it."""

    def __init__(self) -> None:
        self.loads: list[int] = []

    def update(self, in_flight: int) -> None:
        self.loads.append(in_flight)


@pytest.mark.parametrize(("stream", "loads"), [(True, [1, 0]), (False, [])])
def test_only_streamed_requests_are_the_engine_core_placements_load(model, stream, loads):
    """Streamed responses are what keeps the serving processes busy; a non-streamed request leaves the EngineCore
    where it is (free: the worker keeps its core; bench/README.md)."""
    placement = PlacementLoad()
    finished = [output([completion(0, "a", [11], finish="length")], True)]
    instance = generate(model, finished, {"max_tokens": 1}, stream=stream, placement=placement)
    assert placement.loads == loads
    assert instance._streaming == 0 and instance._active == {}


def test_stream_sends_each_delta_and_keeps_the_prompt_count_vllm_sends_only_first(model):
    outputs = [
        output([completion(0, "Hel", [11])], False),
        output([completion(0, "lo", [12, 13])], False, prompt_ids=None),  # vLLM may leave the prompt out
        output([completion(0, "!", [14], finish="length")], True, prompt_ids=None),
    ]
    instance = generate(model, outputs, {"max_tokens": 4}, stream=True, flags={"return_num_input_tokens": True})
    assert instance._engine.params.output_kind == RequestOutputKind.DELTA
    got = responses(instance, ALL_FLAGS)
    assert [r["text"] for r in got] == [["Hel"], ["lo"], ["!"]]
    assert [r["input"] for r in got] == [3, 3, 3]
    assert [r["output"] for r in got] == [[1], [2], [1]]
    assert [r["finish"] for r in got] == [["None"], ["None"], ["length"]]
    assert [r["final"] for r in got] == [False, False, True]
    assert [step.first for step, _ in instance.responder.steps] == [True, False, False]
    assert all(streamed for _, streamed in instance.responder.steps)
    assert instance.responder.closed == 0 and instance._active == {}


def test_stream_with_the_prompt_prepends_it_once_decoded_from_token_ids(model):
    outputs = [
        output([completion(0, "a", [11])], False),
        output([completion(0, "b", [12], finish="stop")], True, prompt_ids=None),
    ]
    instance = generate(model, outputs, stream=True, include_prompt=True, prompt={"prompt_token_ids": PROMPT_IDS})
    assert [r["text"] for r in responses(instance)] == [["<5><6><7>a"], ["b"]]


def test_stream_n2_reports_each_finish_reason_once_in_the_step_it_happened(model):
    outputs = [
        output([completion(0, "x", [1], finish="stop"), completion(1, "y", [2])], False),
        output([completion(1, "z", [3], finish="length")], True),
    ]
    got = responses(generate(model, outputs, {"n": 2, "temperature": 0.8}, stream=True))
    assert [r["text"] for r in got] == [["x", "y"], ["", "z"]]
    assert [r["output"] for r in got] == [[1, 1], [0, 1]]
    assert [r["finish"] for r in got] == [["stop", "None"], ["None", "length"]]


def test_stream_ended_by_the_engine_without_a_finished_output_is_closed(model):
    instance = generate(model, [output([completion(0, "a", [1])], False)], stream=True)
    assert len(instance.responder.steps) == 1 and instance.responder.closed == 1


def test_stream_logprobs_per_step_sampled_token_first_and_infinite_values_replaced(model):
    first = [{11: Logprob(-0.5, 1, "A"), 99: Logprob(-1.5, 2, "B")}]
    second = [{7: Logprob(float("-inf"), 3, "C"), 12: Logprob(-0.25, 1, "D")}]
    outputs = [
        output([completion(0, "A", [11], cumulative=-0.5, logprobs=first)], False),
        output([completion(0, "D", [12], finish="stop", cumulative=-0.75, logprobs=second)], True),
    ]
    instance = generate(model, outputs, {"logprobs": 1}, stream=True)
    assert instance._engine.params.logprobs == 1
    got = responses(instance)
    assert [r["cumulative"] for r in got] == [[-0.5], [-0.75]]
    assert [r["logprobs"] for r in got] == [
        [[{"11": entry(-0.5, 1, "A"), "99": entry(-1.5, 2, "B")}]],
        [[{"12": entry(-0.25, 1, "D"), "7": entry(-9999.0, 3, "C")}]],
    ]
    assert list(got[1]["logprobs"][0][0]) == ["12", "7"]  # the sampled token first


# ---- not streaming ----


def test_non_stream_one_final_answer_with_the_prompt_by_default(model):
    outputs = [output([completion(0, " there", [11, 12], finish="length", cumulative=-1.0)], True)]
    instance = generate(model, outputs, {"max_tokens": 2})
    assert instance._engine.params.output_kind == RequestOutputKind.FINAL_ONLY
    (step, streamed), = instance.responder.steps  # fmt: skip
    assert not streamed
    assert decoded(step) == {
        "text": ["hi there"], "final": True, "finish": ["length"], "input": 3, "output": [2], "cumulative": [-1.0],
        "logprobs": [None],
    }  # fmt: skip


def test_non_stream_exclude_input_in_output_and_n2(model):
    outputs = [output([completion(1, "B", [2, 3], finish="stop"), completion(0, "A", [1], finish="length")], True)]
    (got,) = responses(generate(model, outputs, {"n": 2, "temperature": 1.0}, include_prompt=False))
    assert got["text"] == ["A", "B"] and got["finish"] == ["length", "stop"] and got["output"] == [1, 2]


def test_non_stream_logprobs_cover_every_token(model):
    positions = [{11: Logprob(-0.5, 1, "A")}, {12: Logprob(-0.25, 1, "B"), 13: Logprob(-2.0, 2, "C")}]
    outputs = [output([completion(0, "AB", [11, 12], finish="stop", cumulative=-0.75, logprobs=positions)], True)]
    (got,) = responses(generate(model, outputs, {"logprobs": 1}, include_prompt=False))
    assert got["logprobs"] == [[{"11": entry(-0.5, 1, "A")}, {"12": entry(-0.25, 1, "B"), "13": entry(-2.0, 2, "C")}]]


def test_cumulative_logprob_alone_is_computed_not_reported(model):
    outputs = [output([completion(0, "A", [11], finish="stop", cumulative=-0.5, logprobs=[{11: Logprob(-0.5)}])], True)]
    instance = generate(model, outputs, include_prompt=False)
    assert instance._engine.params.logprobs == 0
    (got,) = responses(instance)
    assert got["cumulative"] == [-0.5] and got["logprobs"] == [None]


@pytest.mark.parametrize("stream", [False, True])
def test_greedy_n3_runs_one_engine_sequence_and_hands_out_three(model, stream):
    outputs = [output([completion(0, "same", [4, 5], finish="length")], True)]
    instance = generate(model, outputs, {"n": 3, "temperature": 0}, stream=stream, include_prompt=False)
    assert instance._engine.params.n == 1
    (got,) = responses(instance)
    assert got["text"] == ["same"] * 3 and got["output"] == [2] * 3 and got["finish"] == ["length"] * 3


def test_prompt_count_from_the_first_output_when_later_ones_leave_it_out(model):
    from accumulator import OutputAccumulator

    accumulator = OutputAccumulator(1, stream=True, include_prompt=False, report_logprobs=False, prompt_text="p",
                                    decode=Tokenizer().decode)  # fmt: skip
    counts = [
        accumulator.fold(output([completion(0, t, [1])], False, prompt_ids=ids)).num_input_tokens
        for t, ids in (("a", [1, 2]), ("b", None), ("c", None))
    ]
    assert counts == [2, 2, 2] and accumulator.final() is None and not accumulator.finished


# ---- errors: the client's fault is a 400, a bug is a 500 ----


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ValueError("top_p must be in (0, 1], got 5.0."), "INVALID_ARG"),
        (VLLMValidationError("The decoder prompt cannot be empty"), "INVALID_ARG"),
        (TypeError("'NoneType' object is not iterable"), "INTERNAL"),
        (AttributeError("'dict' object has no attribute 'text'"), "INTERNAL"),
        (KeyError("prompt_token_ids"), "INTERNAL"),
        (RuntimeError("boom"), "INTERNAL"),
        (EngineDeadError(), "UNAVAILABLE"),
    ],
)
def test_classify(model, exc, code):
    assert model._classify(exc)[0] == code


def test_classify_our_own_errors(model):
    from lora_registry import LoraError, UnknownLora

    assert model._classify(model.RequestError("bad"))[0] == "INVALID_ARG"
    assert model._classify(LoraError("bad"))[0] == "INVALID_ARG"
    assert model._classify(UnknownLora("unknown LoRA adapter 'x'")) == ("NOT_FOUND", "unknown LoRA adapter 'x'")
    assert model._classify(TypeError("x"))[1] == "internal error: TypeError: x"


class Request:
    def __init__(self, params: dict[str, Any]) -> None:
        inputs = {"text_input": b"hi", "sampling_parameters": json.dumps(params).encode()}
        self.tensors = {name: Tensor(name, np.array([value], dtype=np.object_)) for name, value in inputs.items()}

    def get_response_sender(self):
        return object()

    def parameters(self) -> str:
        return "{}"


def handle(model, params: dict[str, Any], engine_outputs, warnings: list[str] | None = None) -> TritonError:
    instance = make_model(model, engine_outputs, warnings)

    async def run() -> None:
        instance._loop = asyncio.get_running_loop()
        await instance._handle(Request(params))

    asyncio.run(run())
    (response,) = instance.responder.sent
    return response.error


def test_a_bug_in_the_request_path_is_an_internal_error(model):
    error = handle(model, {"max_tokens": 2}, TypeError("unsupported operand"))
    assert error.code == "INTERNAL" and error.message == "internal error: TypeError: unsupported operand"


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"top_p": 5}, "top_p"),  # vLLM's VLLMValidationError
        ({"structured_outputs": {"choice": "abc"}}, "choice"),  # pydantic's ValidationError, a ValueError
        ({"structured_outputs": {"json": "{}", "regex": "a"}}, "one kind of structured outputs"),
    ],
)
def test_sampling_params_validation_is_the_clients_error(model, params, named):
    error = handle(model, params, [])
    assert error.code == "INVALID_ARG" and named in error.message


def test_an_unknown_sampling_parameter_is_the_clients_error(model):
    error = handle(model, {"best_of": 2}, [])
    assert error.code == "INVALID_ARG" and error.message == "unknown sampling parameter 'best_of'"


def test_an_unknown_sampling_parameter_is_logged_once(model, monkeypatch):
    import sampling_parameters

    monkeypatch.setattr(sampling_parameters, "_logged_unknown", set())
    warnings: list[str] = []
    for _ in range(2):
        assert handle(model, {"best_of": 2}, [], warnings).code == "INVALID_ARG"
    assert warnings == ["[vllm_model] refused unknown sampling parameter 'best_of' (logged once per name)"]


def test_repetition_penalty_above_two_reaches_the_engine(model):
    instance = generate(model, [output([completion(0, "a", [1], finish="stop")], True)], {"repetition_penalty": 3.5})
    assert instance._engine.params.repetition_penalty == 3.5
