"""A vllm_backend-style client for the tests: tritonclient's own gRPC streaming API, as its users call it."""

from __future__ import annotations

import json
import queue
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient

MODEL = "vllm_model"
RETURN_FLAGS = (
    "return_finish_reason",
    "return_num_input_tokens",
    "return_num_output_tokens",
    "return_cumulative_logprob",
    "return_logprobs",
)


@dataclass
class Outcome:
    responses: list[dict] = field(default_factory=list)
    error: str | None = None

    def texts(self) -> list[str]:
        """Per sequence, the concatenated text of all responses."""
        n = max((len(r["text_output"]) for r in self.responses), default=0)
        return ["".join(r["text_output"][i] for r in self.responses) for i in range(n)]


def make_inputs(
    text: str | None = None,
    *,
    stream: bool = False,
    params: dict | str | None = None,
    exclude_input: bool | None = None,
    token_ids: list[int] | None = None,
    control: dict | None = None,
    return_flags: bool = True,
) -> list[grpcclient.InferInput]:
    inputs = []

    def add(name: str, array: np.ndarray, datatype: str) -> None:
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)

    if text is not None:
        add("text_input", np.array([text.encode()], dtype=np.object_), "BYTES")
    if token_ids is not None:
        add("prompt_token_ids", np.array(token_ids, dtype=np.int64), "INT64")
    if control is not None:
        add("control_request", np.array([json.dumps(control).encode()], dtype=np.object_), "BYTES")
    if control is None:
        add("stream", np.array([stream]), "BOOL")
    if params is not None:
        raw = params if isinstance(params, str) else json.dumps(params)
        add("sampling_parameters", np.array([raw.encode()], dtype=np.object_), "BYTES")
    if exclude_input is not None:
        add("exclude_input_in_output", np.array([exclude_input]), "BOOL")
    if return_flags and control is None:
        for flag in RETURN_FLAGS:
            add(flag, np.array([True]), "BOOL")
    return inputs


def _decode(result) -> dict:
    decoded = {}
    for output in result.get_response().outputs:
        array = result.as_numpy(output.name)
        if array is None:
            continue
        values = array.tolist()
        decoded[output.name] = [v.decode() if isinstance(v, bytes) else v for v in values]
    return decoded


class TritonTestClient:
    def __init__(self, url: str) -> None:
        self.url = url

    def infer(self, inputs, timeout: float = 120, stop_after: int | None = None) -> Outcome:
        """Send one request on a stream; collect responses until the final one (or cancel after `stop_after`)."""
        results: queue.Queue = queue.Queue()
        client = grpcclient.InferenceServerClient(self.url)
        client.start_stream(callback=lambda result, error: results.put((result, error)))
        outcome = Outcome()
        try:
            client.async_stream_infer(MODEL, inputs, enable_empty_final_response=True)
            while True:
                result, error = results.get(timeout=timeout)
                if error is not None:
                    outcome.error = str(error)
                    return outcome
                decoded = _decode(result)
                if decoded:
                    outcome.responses.append(decoded)
                if result.get_response().parameters["triton_final_response"].bool_param:
                    return outcome
                if stop_after is not None and len(outcome.responses) >= stop_after:
                    client.stop_stream(cancel_requests=True)
                    return outcome
        finally:
            client.stop_stream(cancel_requests=True)
            client.close()

    def control(self, op: str, **fields) -> dict:
        outcome = self.infer(make_inputs(control={"op": op, **fields}))
        if outcome.error:
            raise RuntimeError(outcome.error)
        return json.loads(outcome.responses[0]["control_response"][0])
