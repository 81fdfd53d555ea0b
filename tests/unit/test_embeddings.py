"""Embeddings without a server: request validation, base64 encoding, response shaping, dimensions, the model's
embedding_request parsing, and the request tensors the frontend sends."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
from embedding_request import EmbeddingRequestError, embedding_environ, parse_embedding_request
from fastapi.testclient import TestClient

from frontend.app import create_app
from frontend.embeddings import check_dimensions, encode_base64, shape_response
from frontend.errors import APIError
from frontend.protocol import EmbeddingRequest
from frontend.settings import Settings
from frontend.triton import build_embedding_request

MATRYOSHKA = {"embedding_size": 128, "is_matryoshka": True, "matryoshka_dimensions": [32, 64, 128]}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hello", ["hello"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
    ],
)
def test_inputs_forms(value, expected):
    assert EmbeddingRequest(model="m", input=value).inputs() == expected


@pytest.mark.parametrize("value", [[], [""], ["a", ""], [[1], []]])
def test_empty_inputs_name_input(value):
    with pytest.raises(APIError) as info:
        EmbeddingRequest(model="m", input=value).inputs()
    assert info.value.status == 400 and info.value.param == "input"


def test_base64_is_little_endian_float32():
    vector = [0.5, -1.25, 3.0e-8, 1.0 / 3.0]
    raw = base64.b64decode(encode_base64(vector))
    assert len(raw) == 4 * len(vector)
    decoded = np.frombuffer(raw, dtype="<f4")
    assert decoded.tolist() == np.asarray(vector, dtype=np.float32).tolist()
    assert raw[:4] == struct.pack("<f", 0.5)


def test_shape_response_float_and_base64():
    vectors = [([0.1, 0.2], 3), ([0.3, 0.4], 5)]
    body = shape_response(vectors, "emb").model_dump()
    assert body["object"] == "list" and body["model"] == "emb"
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in body["data"])
    assert body["data"][1]["embedding"] == [0.3, 0.4]
    assert body["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    encoded = shape_response(vectors, "emb", "base64").model_dump()
    assert np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), "<f4").tolist() == pytest.approx([0.1, 0.2])


@pytest.mark.parametrize(
    ("dimensions", "facts", "ok"),
    [
        (None, {"is_matryoshka": False, "embedding_size": 128}, True),
        (64, MATRYOSHKA, True),
        (50, MATRYOSHKA, False),
        (256, MATRYOSHKA, False),
        (64, {"is_matryoshka": False, "embedding_size": 128}, False),
        (100, {"is_matryoshka": True, "embedding_size": 128, "matryoshka_dimensions": None}, True),
    ],
)
def test_check_dimensions(dimensions, facts, ok):
    if ok:
        check_dimensions(dimensions, facts, "m")
        return
    with pytest.raises(APIError) as info:
        check_dimensions(dimensions, facts, "m")
    assert info.value.status == 400 and info.value.param == "dimensions"


def test_request_validation_names_fields():
    client = TestClient(create_app(Settings()))
    bad = [
        ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "m", "input": [1.5]}, "input"),
        ({"model": "m"}, "input"),
    ]
    for body, param in bad:
        response = client.post("/v1/embeddings", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param, response.json()


def test_not_configured_is_404():
    response = TestClient(create_app(Settings())).post("/v1/embeddings", json={"model": "m", "input": "x"})
    assert response.status_code == 404
    assert "embedding" in response.json()["error"]["message"]


def test_auth_applies():
    client = TestClient(create_app(Settings(api_key="k")))
    assert client.post("/v1/embeddings", json={"model": "m", "input": "x"}).status_code == 401


def test_frontend_request_matches_vllm_backend_interface():
    message = build_embedding_request("vllm_embedding", [5, 6], 64)
    names = [t.name for t in message.inputs]
    assert names == ["embedding_request", "return_num_input_tokens"]
    raw = message.raw_input_contents[0][4:].decode()
    assert json.loads(raw) == {"input": [5, 6], "pooling_params": {"dimensions": [64]}}
    parsed = parse_embedding_request(raw)
    assert parsed.prompt == {"prompt_token_ids": [5, 6]} and parsed.dimensions == 64


@pytest.mark.parametrize(
    ("raw", "prompt", "dims"),
    [
        ('{"input": "hi"}', "hi", None),
        ('{"input": "hi", "pooling_params": {}}', "hi", None),
        ('{"input": [1, 2], "pooling_params": {"dimensions": [32]}}', {"prompt_token_ids": [1, 2]}, 32),
        ('{"input": "hi", "pooling_params": {"dimensions": 64}}', "hi", 64),
    ],
)
def test_parse_embedding_request(raw, prompt, dims):
    parsed = parse_embedding_request(raw)
    assert parsed.prompt == prompt and parsed.dimensions == dims


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        '{"x": 1}',
        '{"input": ""}',
        '{"input": []}',
        '{"input": [true]}',
        '{"input": [-1]}',
        '{"input": "a", "pooling_params": {"dimensions": [0]}}',
        '{"input": "a", "pooling_params": []}',
    ],
)
def test_parse_embedding_request_refuses(raw):
    with pytest.raises(EmbeddingRequestError):
        parse_embedding_request(raw)


def test_embedding_environ_keeps_generation_overrides_out():
    env = {"TRITON_VLLM_MODEL": "/gen", "TRITON_VLLM_EMBEDDING_MODEL": "/emb", "TRITON_VLLM_ENGINE_ARGS": "{}"}
    assert embedding_environ(env) == {"TRITON_VLLM_MODEL": "/emb"}
