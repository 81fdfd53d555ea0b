"""frontend.errors: OpenAI's error shape, and the handlers that make every failure use it."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

from frontend.errors import APIError, bad_request, install_error_handlers, model_not_found
from frontend.protocol import CompletionRequest


def test_body_shape():
    error = APIError(400, "bad thing", param="temperature", code="invalid_value")
    assert error.body() == {
        "error": {
            "message": "bad thing",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_value",
        }
    }


def test_body_has_all_keys_even_when_unset():
    assert APIError(400, "x").body() == {
        "error": {"message": "x", "type": "invalid_request_error", "param": None, "code": None}
    }


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, "invalid_request_error"),
        (404, "invalid_request_error"),
        (413, "invalid_request_error"),
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "server_error"),
        (503, "server_error"),
    ],
)
def test_default_type_by_status(status, expected):
    assert APIError(status, "x").type == expected


def test_explicit_type_wins():
    assert APIError(400, "x", type="custom_error").type == "custom_error"


def test_message_is_exception_text():
    assert str(APIError(400, "the message")) == "the message"


def test_response_carries_status_and_headers():
    response = APIError(429, "slow down", headers={"Retry-After": "1"}).response()
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"


def test_bad_request_helper():
    error = bad_request("nope", param="prompt", code="c")
    assert (error.status, error.param, error.code, error.type) == (400, "prompt", "c", "invalid_request_error")


def test_model_not_found():
    error = model_not_found("ghost")
    assert error.status == 404
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert "ghost" in error.message
    assert error.body()["error"]["type"] == "invalid_request_error"


# ---- installed handlers ----


class Body(BaseModel):
    name: str
    count: int = Field(ge=1)


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/items")
    async def items(body: Body) -> dict:
        return {"count": body.count}

    @app.get("/api-error")
    async def api_error() -> dict:
        raise APIError(409, "conflict here", param="thing", code="conflict")

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("secret internal detail")

    return TestClient(app, raise_server_exceptions=False)


def assert_openai_shape(payload: dict) -> dict:
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]
    return payload["error"]


def test_valid_body_passes(client):
    response = client.post("/items", json={"name": "a", "count": 2})
    assert response.status_code == 200
    assert response.json() == {"count": 2}


def test_validation_error_is_400_naming_the_field(client):
    response = client.post("/items", json={"name": "a", "count": 0})
    assert response.status_code == 400
    error = assert_openai_shape(response.json())
    assert error["param"] == "count"
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("count:")


def test_missing_field_is_400_naming_the_field(client):
    response = client.post("/items", json={"count": 1})
    assert response.status_code == 400
    assert assert_openai_shape(response.json())["param"] == "name"


def test_several_problems_are_counted(client):
    response = client.post("/items", json={"count": 0})
    assert response.status_code == 400
    assert "more problem" in assert_openai_shape(response.json())["message"]


def test_malformed_json_is_400(client):
    response = client.post("/items", content=b'{"name": "a",', headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = assert_openai_shape(response.json())
    assert error["code"] == "invalid_json"
    assert error["type"] == "invalid_request_error"


def test_unknown_route_is_404_in_openai_shape(client):
    response = client.get("/no/such/route")
    assert response.status_code == 404
    error = assert_openai_shape(response.json())
    assert error["type"] == "invalid_request_error"
    assert error["message"] == "Not Found"


def test_wrong_method_is_405_in_openai_shape(client):
    response = client.get("/items")
    assert response.status_code == 405
    assert_openai_shape(response.json())


def test_api_error_raised_in_route(client):
    response = client.get("/api-error")
    assert response.status_code == 409
    assert response.json() == {
        "error": {"message": "conflict here", "type": "invalid_request_error", "param": "thing", "code": "conflict"}
    }


def test_unexpected_exception_is_500_without_details(client):
    response = client.get("/boom")
    assert response.status_code == 500
    error = assert_openai_shape(response.json())
    assert error["type"] == "server_error"
    assert error["code"] == "internal_error"
    assert "secret" not in response.text


def test_completion_request_validation_through_app():
    # The real request model through the handlers: the param names the OpenAI field.
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> dict:
        return body.to_sampling_parameters()

    with TestClient(app) as test_client:
        response = test_client.post("/v1/completions", json={"model": "m", "prompt": "x", "temperature": 5})
        assert response.status_code == 400
        assert assert_openai_shape(response.json())["param"] == "temperature"
        response = test_client.post("/v1/completions", json={"model": "m", "prompt": "x", "suffix": "s"})
        assert response.status_code == 400
        assert "suffix" in assert_openai_shape(response.json())["message"]
