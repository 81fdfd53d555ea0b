"""frontend.triton pure parts: request encoding, response decoding, error classification."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from frontend.triton import (
    GenerateRequest,
    build_request,
    classify_model_error,
    parse_chunk,
    response_outputs,
)


def inputs_of(
    message: service_pb2.ModelInferRequest,
) -> dict[str, tuple[service_pb2.ModelInferRequest.InferInputTensor, bytes]]:
    assert len(message.inputs) == len(message.raw_input_contents)
    return {tensor.name: (tensor, raw) for tensor, raw in zip(message.inputs, message.raw_input_contents, strict=True)}


def bytes_element(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<I", len(data)) + data


# ---- build_request ----


def test_text_prompt_request():
    sampling = {"n": 2, "max_tokens": None, "stop": ["\n"]}
    message = build_request("vllm_model", GenerateRequest(prompt="héllo ✓", sampling_parameters=sampling, stream=True))
    assert message.model_name == "vllm_model"
    inputs = inputs_of(message)

    tensor, raw = inputs["text_input"]
    assert (tensor.datatype, list(tensor.shape)) == ("BYTES", [1])
    encoded = "héllo ✓".encode()
    assert raw == struct.pack("<I", len(encoded)) + encoded
    assert raw[:4] == len(encoded).to_bytes(4, "little")
    assert "prompt_token_ids" not in inputs

    tensor, raw = inputs["stream"]
    assert (tensor.datatype, list(tensor.shape), raw) == ("BOOL", [1], b"\x01")

    tensor, raw = inputs["exclude_input_in_output"]
    assert (tensor.datatype, raw) == ("BOOL", b"\x01")

    tensor, raw = inputs["sampling_parameters"]
    assert tensor.datatype == "BYTES"
    (length,) = struct.unpack_from("<I", raw)
    assert length == len(raw) - 4
    assert json.loads(raw[4:].decode("utf-8")) == sampling

    for flag in ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens"):
        assert inputs[flag][0].datatype == "BOOL"
        assert inputs[flag][1] == b"\x01"
    assert "return_logprobs" not in inputs


def test_empty_final_response_parameter_set():
    message = build_request("m", GenerateRequest(prompt="x", sampling_parameters={}, stream=False))
    assert message.parameters["triton_enable_empty_final_response"].bool_param is True


def test_request_id_passed():
    message = build_request("m", GenerateRequest(prompt="x", sampling_parameters={}, stream=False), "req-1")
    assert message.id == "req-1"


def test_token_id_prompt_request():
    ids = [1, 2, 300000, 2**40]
    message = build_request("m", GenerateRequest(prompt=ids, sampling_parameters={}, stream=False))
    inputs = inputs_of(message)
    assert "text_input" not in inputs
    tensor, raw = inputs["prompt_token_ids"]
    assert tensor.datatype == "INT64"
    assert list(tensor.shape) == [len(ids)]
    assert raw == struct.pack(f"<{len(ids)}q", *ids)
    assert np.frombuffer(raw, dtype="<i8").tolist() == ids


def test_stream_false_and_include_prompt_and_logprobs():
    message = build_request(
        "m", GenerateRequest(prompt="x", sampling_parameters={}, stream=False, include_prompt=True, logprobs=True)
    )
    inputs = inputs_of(message)
    assert inputs["stream"][1] == b"\x00"
    # include_prompt=True means the prompt is NOT excluded from the output.
    assert inputs["exclude_input_in_output"][1] == b"\x00"
    assert inputs["return_logprobs"] == (inputs["return_logprobs"][0], b"\x01")
    assert inputs["return_logprobs"][0].datatype == "BOOL"


# ---- response decoding ----


def make_response(outputs: list[tuple[str, str, list[int], bytes]], final: bool = False):
    response = service_pb2.ModelInferResponse(model_name="vllm_model", id="r")
    for name, datatype, shape, raw in outputs:
        response.outputs.append(
            service_pb2.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=shape)
        )
        response.raw_output_contents.append(raw)
    if final:
        response.parameters["triton_final_response"].bool_param = True
    return response


def generation_response(texts, reasons, num_input, num_output, logprobs=None):
    outputs = [
        ("text_output", "BYTES", [len(texts)], b"".join(bytes_element(t) for t in texts)),
        ("finish_reason", "BYTES", [len(reasons)], b"".join(bytes_element(r) for r in reasons)),
        ("num_input_tokens", "UINT32", [1], np.array([num_input], dtype="<u4").tobytes()),
        ("num_output_tokens", "UINT32", [len(num_output)], np.array(num_output, dtype="<u4").tobytes()),
    ]
    if logprobs is not None:
        encoded = b"".join(bytes_element(json.dumps(entries)) for entries in logprobs)
        outputs.append(("logprobs", "BYTES", [len(logprobs)], encoded))
    return make_response(outputs)


def test_response_outputs_decodes_types():
    response = make_response(
        [
            ("text_output", "BYTES", [2], bytes_element("ab") + bytes_element("")),
            ("num_output_tokens", "UINT32", [2], np.array([3, 4000000000], dtype="<u4").tobytes()),
            ("cumulative_logprob", "FP32", [2], np.array([-1.5, 0.25], dtype="<f4").tobytes()),
        ]
    )
    outputs = response_outputs(response)
    assert outputs["text_output"] == ["ab", ""]
    assert outputs["num_output_tokens"] == [3, 4000000000]
    assert outputs["cumulative_logprob"] == [-1.5, 0.25]


def test_response_outputs_decodes_utf8():
    response = make_response([("text_output", "BYTES", [1], bytes_element("日本 ✓"))])
    assert response_outputs(response) == {"text_output": ["日本 ✓"]}


def test_parse_chunk_two_sequences():
    response = generation_response(["Hello", " world"], ["", "stop"], 7, [2, 3])
    chunk = parse_chunk(response, logprobs=False)
    assert chunk.texts == ["Hello", " world"]
    assert chunk.finish_reasons == [None, "stop"]
    assert chunk.num_input_tokens == 7
    assert chunk.num_output_tokens == [2, 3]
    assert chunk.logprobs is None
    assert chunk.final is False
    assert chunk.prompt_index == 0


def test_parse_chunk_reads_the_models_none_as_not_finished():
    """The model sends "None" (as vllm_backend) for a sequence that has not finished yet."""
    chunk = parse_chunk(generation_response(["a", "b"], ["None", "length"], 3, [1, 1]), logprobs=False)
    assert chunk.finish_reasons == [None, "length"]


def test_parse_chunk_with_logprobs():
    entries = [[{"5": {"logprob": -0.1, "rank": 1, "decoded_token": "a"}}], []]
    response = generation_response(["a", ""], ["", ""], 3, [1, 0], logprobs=entries)
    chunk = parse_chunk(response, logprobs=True)
    assert chunk.logprobs == entries
    assert chunk.finish_reasons == [None, None]


def test_parse_chunk_ignores_logprobs_when_not_asked():
    entries = [[{"5": {"logprob": -0.1, "rank": 1, "decoded_token": "a"}}]]
    response = generation_response(["a"], [""], 3, [1], logprobs=entries)
    assert parse_chunk(response, logprobs=False).logprobs is None


def test_parse_chunk_without_optional_outputs():
    response = make_response([("text_output", "BYTES", [2], bytes_element("x") + bytes_element("y"))])
    chunk = parse_chunk(response, logprobs=False)
    assert chunk.texts == ["x", "y"]
    assert chunk.finish_reasons == [None, None]
    assert chunk.num_input_tokens == 0
    assert chunk.num_output_tokens == [0, 0]


# ---- classify_model_error ----


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("unknown LoRA adapter 'x'", "not_found"),
        ("Unknown LoRA adapter 'x' (known: a, b)", "not_found"),
        ("engine is dead: EngineCore died", "unavailable"),
        ("Stub process 'vllm_model_0_0' is not healthy.", "unavailable"),
        ("Request for unknown model: 'vllm_model' is not found", "unavailable"),
        ("model 'vllm_model' is not ready", "unavailable"),
        ("sampling parameter 'temperature' must be a finite number, got 'hot'", "invalid"),
        ("unknown sampling parameter 'foo'", "invalid"),
        ("input 'text_input' is required (or 'prompt_token_ids')", "invalid"),
        ("This model's maximum context length is 2048 tokens", "invalid"),
        ("internal error: something broke", "internal"),
        ("an unexpected error happened", "invalid"),
        ("the user wrote 'engine is dead' in a stop string", "invalid"),
    ],
)
def test_classify_model_error(message, kind):
    assert classify_model_error(message) == kind


def test_classify_model_internal_error_format():
    """model.py reports unexpected failures as 'internal error: <Class>: <message>'."""
    assert classify_model_error("internal error: RuntimeError: boom") == "internal"
