"""triton-inference-server/vllm_backend's own client tests, adapted to our model over gRPC.

Each test names the vllm_backend test it ports (ci/L0_*/..., ci/common/test_util.py, samples/client.py at
commit 8de0c14). The requests are theirs: the same tensors built the same way (`create_vllm_request`), the same
`sampling_parameters` JSON (numbers as strings), also sent as request parameters, tritonclient's stream API with a
callback and no empty final response. Adapted only where their expectations name facebook/opt-125m's text or token
counts (we check the same relations against our tiny model: prompt + excluded text, stream pieces, offline vLLM),
a GPU, a second model repository, or log lines of their implementation. docs/CONTRACT.md lists what each gave.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import re
import time
from functools import partial

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio_grpcclient
from tritonclient.utils import InferenceServerException

from tests.conftest import LORA_NAMES, TINY_LORAS, run_reference, wait_for_idle

MODEL = "vllm_model"  # their "vllm_opt" / "vllm_llama_multi_lora"
PROMPTS = ["The most dangerous animal is", "The capital of France is", "The future of AI is"]
SAMPLING_PARAMETERS = {"temperature": "0", "top_p": "1"}
SAMPLE_PROMPTS = [
    "Hello, my name is\n",
    "The most dangerous animal is\n",
    "The capital of France is\n",
    "The future of AI is\n",
]


LORA_PROMPTS = [
    "Instruct: What do you think of Computer Science?\nOutput:",
    "Instruct: Tell me more about soccer\nOutput:",
]
STRUCTURED_PROMPT = "Classify intent of the sentence: Harry Potter is underrated. "
CHOICE = {"choice": ["Positive", "Negative"]}
GREEDY_INT = {"temperature": 0, "top_p": 1}  # accuracy_test's SAMPLING_PARAMETERS (numbers, not strings)


@pytest.fixture(scope="module")
def offline() -> dict[str, list[str]]:
    """vLLM's offline engine (same engine arguments as the stack), once for this module: accuracy_test's baseline."""
    cases = {f"accuracy-{i}": {"prompt": p, "params": GREEDY_INT} for i, p in enumerate(PROMPTS)}
    cases["structured"] = {"prompt": STRUCTURED_PROMPT, "params": {**GREEDY_INT, "structured_outputs": CHOICE}}
    for lora_id, (name, prompt) in enumerate(zip(LORA_NAMES, LORA_PROMPTS, strict=True), start=1):
        cases[f"lora-{name}"] = {
            "prompt": prompt,
            "params": GREEDY_INT,
            "lora": [name, lora_id, str(TINY_LORAS / name)],
        }
    results = run_reference(list(cases.values()))
    return {key: result["texts"] for key, result in zip(cases, results, strict=True)}


# ---- ci/common/test_util.py, as is (model name aside) ----


def create_vllm_request(
    prompt,
    request_id,
    stream,
    sampling_parameters,
    model_name,
    send_parameters_as_tensor=True,
    exclude_input_in_output=None,
):
    inputs = [grpcclient.InferInput("text_input", [1], "BYTES")]
    inputs[-1].set_data_from_numpy(np.array([prompt.encode("utf-8")], dtype=np.object_))
    inputs.append(grpcclient.InferInput("stream", [1], "BOOL"))
    inputs[-1].set_data_from_numpy(np.array([stream], dtype=bool))
    if send_parameters_as_tensor:
        data = np.array([json.dumps(sampling_parameters).encode("utf-8")], dtype=np.object_)
        inputs.append(grpcclient.InferInput("sampling_parameters", [1], "BYTES"))
        inputs[-1].set_data_from_numpy(data)
    if exclude_input_in_output is not None:
        inputs.append(grpcclient.InferInput("exclude_input_in_output", [1], "BOOL"))
        inputs[-1].set_data_from_numpy(np.array([exclude_input_in_output], dtype=bool))
    outputs = [grpcclient.InferRequestedOutput("text_output")]
    return {
        "model_name": model_name,
        "inputs": inputs,
        "outputs": outputs,
        "request_id": str(request_id),
        "parameters": sampling_parameters,
    }


def send_vllm_request(
    client,
    prompt,
    request_id,
    stream,
    sampling_parameters,
    model_name=MODEL,
    send_parameters_as_tensor=True,
    exclude_input_in_output=None,
) -> None:
    """create_vllm_request sent on the client's open stream, as their tests send it: the sampling parameters also
    as Triton request parameters."""
    request = create_vllm_request(
        prompt, request_id, stream, sampling_parameters, model_name, send_parameters_as_tensor, exclude_input_in_output
    )
    client.async_stream_infer(
        model_name=model_name,
        request_id=request["request_id"],
        inputs=request["inputs"],
        outputs=request["outputs"],
        parameters=sampling_parameters,
    )


def callback(results: queue.Queue, result, error):
    results.put(error if error else result)


def run_vllm_requests(url, prompts, sampling_parameters, stream=False, send_parameters_as_tensor=True, exclude=None):
    """Their `_test_vllm_model`: all prompts on one stream, one (non-streaming) result each; returns {id: text}."""
    results: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(url=url)
    client.start_stream(callback=partial(callback, results))
    try:
        for i, prompt in enumerate(prompts):
            send_vllm_request(
                client,
                prompt,
                i,
                stream,
                sampling_parameters,
                MODEL,
                send_parameters_as_tensor,
                exclude_input_in_output=exclude,
            )
        texts = {}
        for _ in prompts:
            result = results.get(timeout=120)
            assert not isinstance(result, InferenceServerException), str(result)
            output = result.as_numpy("text_output")
            assert output is not None, "`text_output` should not be None"
            texts[result.get_response().id] = output[0].decode("utf-8")
        return [texts[str(i)] for i in range(len(prompts))]
    finally:
        client.stop_stream()
        client.close()


# ---- ci/L0_backend_vllm/vllm_backend/vllm_backend_test.py ----


@pytest.mark.parametrize("as_tensor", [True, False], ids=["tensor", "request-parameters"])
def test_vllm_triton_backend_requests(triton_grpc_url, as_tensor):
    """test_vllm_triton_backend's inference part: 3 prompts, non-streaming, parameters as a tensor or not."""
    texts = run_vllm_requests(triton_grpc_url, PROMPTS, SAMPLING_PARAMETERS, send_parameters_as_tensor=as_tensor)
    assert all(text.startswith(prompt) for text, prompt in zip(texts, PROMPTS, strict=True))


def test_sampling_parameters_as_request_parameters_are_applied(triton_grpc_url):
    """vllm_backend reads Triton request parameters when the tensor is absent: the same greedy text either way.

    (Their test only checks that some text came back; with the parameters ignored, sampling at vLLM's default
    temperature 1.0 would still pass it.)
    """
    params = {"temperature": "0", "top_p": "1", "max_tokens": "12"}
    as_tensor = run_vllm_requests(triton_grpc_url, PROMPTS, params, exclude=True)
    as_parameters = run_vllm_requests(triton_grpc_url, PROMPTS, params, send_parameters_as_tensor=False, exclude=True)
    again = run_vllm_requests(triton_grpc_url, PROMPTS, params, send_parameters_as_tensor=False, exclude=True)
    assert as_parameters == as_tensor == again
    seeded = {"temperature": 1.0, "seed": 3, "max_tokens": 12}
    assert run_vllm_requests(triton_grpc_url, PROMPTS[:1], seeded, send_parameters_as_tensor=False) == (
        run_vllm_requests(triton_grpc_url, PROMPTS[:1], seeded)
    )


def test_bad_request_parameters_are_an_error(triton_grpc_url):
    with pytest.raises(AssertionError, match="unknown sampling parameter 'temprature'"):
        run_vllm_requests(triton_grpc_url, PROMPTS[:1], {"temprature": "0"}, send_parameters_as_tensor=False)
    assert run_vllm_requests(triton_grpc_url, PROMPTS[:1], SAMPLING_PARAMETERS)  # still serving


def test_exclude_input_in_output_default_false_true(triton_grpc_url):
    """test_exclude_input_in_output_{default,false,true}: their OPT texts become the relation between the three."""
    prompts = ["The capital of France is"]
    default = run_vllm_requests(triton_grpc_url, prompts, SAMPLING_PARAMETERS)[0]
    false = run_vllm_requests(triton_grpc_url, prompts, SAMPLING_PARAMETERS, exclude=False)[0]
    true = run_vllm_requests(triton_grpc_url, prompts, SAMPLING_PARAMETERS, exclude=True)[0]
    assert true and not true.startswith(prompts[0])
    assert default == false == prompts[0] + true


# ---- ci/L0_backend_vllm/enabled_stream/enabled_stream_test.py ----


async def stream_vllm(url, prompts, stream=True, exclude=None, sampling_parameters=SAMPLING_PARAMETERS):
    """Their async `_test_vllm_model`: stream_infer over tritonclient.grpc.aio; (texts, errors) in order."""
    async with aio_grpcclient.InferenceServerClient(url=url) as client:

        async def request_iterator():
            for i, prompt in enumerate(prompts):
                yield create_vllm_request(
                    prompt, i, stream, sampling_parameters, MODEL, exclude_input_in_output=exclude
                )

        texts, errors = [], []
        async for result, error in client.stream_infer(inputs_iterator=request_iterator()):
            if error is not None:
                errors.append(error)
                continue
            output = result.as_numpy("text_output")
            assert output is not None, "`text_output` should not be None"
            texts.append((result.get_response().id, str(output[0], encoding="utf-8")))
        return texts, errors


def test_enabled_stream_two_prompts(triton_grpc_url):
    texts, errors = asyncio.run(stream_vllm(triton_grpc_url, ["The most dangerous animal is", "The future of AI is"]))
    assert not errors
    assert {request_id for request_id, _ in texts} == {"0", "1"}


def test_enabled_stream_exclude_input_in_output_default(triton_grpc_url):
    """Their expected list is OPT's 16 one-token deltas; ours: the deltas join to the non-streamed answer."""
    prompt = PROMPTS[0]
    texts, errors = asyncio.run(stream_vllm(triton_grpc_url, [prompt]))
    assert not errors
    pieces = [text for _, text in texts]
    assert 1 < len(pieces) <= 16  # vLLM's default max_tokens; a slow reader may get merged steps
    assert "".join(pieces) == run_vllm_requests(triton_grpc_url, [prompt], SAMPLING_PARAMETERS, exclude=True)[0]


def test_enabled_stream_exclude_input_in_output_false(triton_grpc_url):
    """vllm_backend errors ("When streaming, `exclude_input_in_output` = False is not allowed."); we prepend the
    prompt to the first response instead (our documented extension; no client that works there breaks here)."""
    prompt = PROMPTS[0]
    texts, errors = asyncio.run(stream_vllm(triton_grpc_url, [prompt], exclude=False))
    assert not errors
    assert "".join(text for _, text in texts) == run_vllm_requests(triton_grpc_url, [prompt], SAMPLING_PARAMETERS)[0]


# ---- ci/L0_additional_outputs_vllm/additional_outputs_test.py ----

ADDITIONAL_PROMPT = "In this example,"
FLAGS = (
    "return_finish_reason",
    "return_cumulative_logprob",
    "return_logprobs",
    "return_num_input_tokens",
    "return_num_output_tokens",
)
# Their full matrix is 2 x 3^6 = 1458 requests; by default every value of every flag is covered (each case sets all
# five flags to the same value) with every stream x logprobs pair. VLLM_BACKEND_FULL_MATRIX=1 runs all of it.
if os.environ.get("VLLM_BACKEND_FULL_MATRIX") == "1":
    _FLAG_CASES = list(itertools.product([None, True, False], repeat=len(FLAGS)))
else:
    _FLAG_CASES = [(value,) * len(FLAGS) for value in (None, True, False)]


def _additional_inputs(prompt, stream, sampling_parameters, flags: dict):
    inputs = [grpcclient.InferInput("text_input", [1], "BYTES")]
    inputs[-1].set_data_from_numpy(np.array([prompt.encode("utf-8")], dtype=np.object_))
    inputs.append(grpcclient.InferInput("stream", [1], "BOOL"))
    inputs[-1].set_data_from_numpy(np.array([stream], dtype=bool))
    inputs.append(grpcclient.InferInput("sampling_parameters", [1], "BYTES"))
    inputs[-1].set_data_from_numpy(np.array([json.dumps(sampling_parameters).encode("utf-8")], dtype=np.object_))
    for name, value in flags.items():
        if value is not None:
            inputs.append(grpcclient.InferInput(name, [1], "BOOL"))
            inputs[-1].set_data_from_numpy(np.array([value], dtype=bool))
    return inputs


@pytest.mark.parametrize("flag_values", _FLAG_CASES, ids=lambda v: "-".join(str(x) for x in v))
@pytest.mark.parametrize("logprobs", [None, 0, 2])
@pytest.mark.parametrize("stream", [True, False])
def test_additional_outputs(triton_grpc_url, stream, logprobs, flag_values):
    flags = dict(zip(FLAGS, flag_values, strict=True))
    sampling_parameters = dict(SAMPLING_PARAMETERS)
    if logprobs is not None:
        sampling_parameters["logprobs"] = logprobs
    responses = []
    with grpcclient.InferenceServerClient(triton_grpc_url) as client:
        client.start_stream(lambda result, error: responses.append((result, error)))
        client.async_stream_infer(
            MODEL,
            inputs=_additional_inputs(ADDITIONAL_PROMPT, stream, sampling_parameters, flags),
            parameters=sampling_parameters,
        )
        client.stop_stream()
    assert responses
    assert all(error is None for _, error in responses), responses
    results = [result for result, _ in responses]
    text_output = "".join(r.as_numpy("text_output")[0].decode("utf-8") for r in results)
    # Their "output is a sentence" check (> 4 spaces) fits OPT's English; the tiny model's text is random tokens.
    assert len(text_output) > 0, "output is empty"

    # _assert_finish_reason
    for i, result in enumerate(results):
        reason = result.as_numpy("finish_reason")
        if not flags["return_finish_reason"]:
            assert reason is None
            continue
        assert reason[0].decode("utf-8") == ("None" if i < len(results) - 1 else "length")

    # _assert_cumulative_logprob
    previous = 0.0
    for result in results:
        cumulative = result.as_numpy("cumulative_logprob")
        if not flags["return_cumulative_logprob"]:
            assert cumulative is None
            continue
        value = cumulative[0].astype(float)
        assert value != previous
        previous = value

    # _assert_logprobs
    for result in results:
        logprobs_np = result.as_numpy("logprobs")
        if not flags["return_logprobs"]:
            assert logprobs_np is None
            continue
        entries = json.loads(logprobs_np[0].decode("utf-8"))
        if "logprobs" not in sampling_parameters:
            assert entries is None
            continue
        assert isinstance(entries, list) and len(entries) >= 1
        if flags["return_num_output_tokens"]:
            assert len(entries) == result.as_numpy("num_output_tokens")[0].astype(int)
        text_from_logprobs = ""
        for entry in entries:
            assert isinstance(entry, dict) and 1 <= len(entry) <= sampling_parameters["logprobs"] + 1
            rank_one_found = False
            for token_id, info in entry.items():
                assert isinstance(token_id, str)
                assert len(info) == 3
                assert isinstance(info["logprob"], float)
                assert isinstance(info["rank"], int)
                assert isinstance(info["decoded_token"], str)
                if info["rank"] == 1:
                    assert not rank_one_found
                    rank_one_found = True
                    text_from_logprobs += info["decoded_token"]
            assert rank_one_found
        text = result.as_numpy("text_output")[0].decode("utf-8")
        if not stream:
            text_from_logprobs = ADDITIONAL_PROMPT + text_from_logprobs
        assert text_from_logprobs == text

    # _assert_num_input_tokens / _assert_num_output_tokens
    for result in results:
        num_input = result.as_numpy("num_input_tokens")
        if not flags["return_num_input_tokens"]:
            assert num_input is None
        else:
            assert 0 < num_input.astype(int) <= len(ADDITIONAL_PROMPT)
        num_output = result.as_numpy("num_output_tokens")
        if not flags["return_num_output_tokens"]:
            assert num_output is None
        else:
            assert num_output[0].astype(int) > 0


# ---- ci/L0_backend_vllm/request_cancellation/request_cancellation_test.py ----


def test_request_cancellation(triton_grpc_url, triton):
    """Theirs: max_tokens 1500, sleep 1 s, stop_stream(cancel_requests=True), then a CANCELLED result and their
    backend's log lines. Adapted: 900 tokens (the tiny model's context is 1024), cancelled once the model reports
    the request in flight, and the model's stats (no request left in the model or the engine) instead of log lines."""
    results: queue.Queue = queue.Queue()
    params = {"temperature": "0", "top_p": "1", "max_tokens": "900", "ignore_eos": "true"}
    with grpcclient.InferenceServerClient(url=triton_grpc_url) as client:
        client.start_stream(callback=partial(callback, results))
        send_vllm_request(client, "Write an original and creative poem of at least 200 words.", "1", False, params)
        deadline = time.monotonic() + 60
        while triton.control("stats")["active_requests"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.stop_stream(cancel_requests=True)
        result = results.get(timeout=10)
        assert isinstance(result, InferenceServerException)
        assert result.status() == "StatusCode.CANCELLED"
        assert results.empty()
    assert wait_for_idle(triton, timeout=30) == {"active_requests": 0, "engine_unfinished_requests": 0}


# ---- ci/L0_backend_vllm/metrics_test/vllm_metrics_test.py ----


def parse_vllm_metrics(url: str) -> dict[str, float]:
    """Theirs, as is: the first sample of each vllm: name (their regex keeps the last of each name)."""
    text = httpx.get(url, timeout=10).text
    matches = re.findall(r"^(vllm:[^ {]+)(?:{.*})? ([0-9.-]+)$", text, re.MULTILINE)
    return {key: float(value) if "." in value else int(value) for key, value in matches}


def _counts(url: str, prompts, params) -> tuple[int, int]:
    """Prompt and generated tokens of these requests, as the model reports them."""
    prompt_tokens = generated = 0
    for prompt in prompts:
        inputs = create_vllm_request(prompt, 0, False, params, MODEL)["inputs"]
        for name in ("return_num_input_tokens", "return_num_output_tokens"):
            inputs.append(grpcclient.InferInput(name, [1], "BOOL"))
            inputs[-1].set_data_from_numpy(np.array([True]))
        results: queue.Queue = queue.Queue()
        with grpcclient.InferenceServerClient(url) as client:
            client.start_stream(callback=partial(callback, results))
            client.async_stream_infer(MODEL, inputs=inputs)
            result = results.get(timeout=120)
            client.stop_stream()
        assert not isinstance(result, InferenceServerException), str(result)
        prompt_tokens += int(result.as_numpy("num_input_tokens")[0])
        generated += int(result.as_numpy("num_output_tokens").sum())
    return prompt_tokens, generated


def _scrape_settled(url: str) -> str:
    time.sleep(1.0)  # the model publishes metrics every 0.2 s
    return httpx.get(url, timeout=10).text


def _sample(text: str, name: str) -> float:
    total = 0.0
    for match in re.finditer(rf'^{re.escape(name)}\{{[^}}]*model="vllm_model"[^}}]*\}} ([0-9.e+-]+)$', text, re.M):
        total += float(match.group(1))
    return total


@pytest.fixture(scope="module")
def triton_metrics(stack) -> str:
    return f"http://127.0.0.1:{stack.config.triton_ports.metrics}/metrics"


def test_vllm_metrics(triton_grpc_url, triton_metrics):
    """Their token counts are OPT's (18 prompt, 48 generated per round); ours are what the model reported."""
    inference_count = 2
    prompt_tokens, generated = _counts(triton_grpc_url, PROMPTS, SAMPLING_PARAMETERS)
    before = _scrape_settled(triton_metrics)
    for _ in range(inference_count):
        run_vllm_requests(triton_grpc_url, PROMPTS, SAMPLING_PARAMETERS)
    after = _scrape_settled(triton_metrics)
    requests = len(PROMPTS) * inference_count

    def delta(name: str) -> float:
        return _sample(after, name) - _sample(before, name)

    assert delta("vllm:prompt_tokens_total") == prompt_tokens * inference_count
    assert delta("vllm:generation_tokens_total") == generated * inference_count
    for histogram in ("vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds"):
        assert delta(f"{histogram}_count") == requests
        assert delta(f"{histogram}_sum") > 0
    assert delta("vllm:request_prompt_tokens_count") == requests
    assert delta("vllm:request_prompt_tokens_sum") == prompt_tokens * inference_count
    assert delta("vllm:request_generation_tokens_count") == requests
    assert delta("vllm:request_generation_tokens_sum") == generated * inference_count
    # Their vllm:time_per_output_token_seconds (one observation per token after the first) is, under vLLM's current
    # name vllm:inter_token_latency_seconds, opt-in here (REPORT_INTER_TOKEN_LATENCY: an IPC per token); the
    # per-request mean is on by default.
    assert delta("vllm:request_time_per_output_token_seconds_count") == requests
    names = parse_vllm_metrics(triton_metrics)
    for name in ("vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:time_to_first_token_seconds_count"):
        assert name in names


def test_custom_sampling_params(triton_grpc_url, triton_metrics):
    """n=2, temperature 1: vllm:request_params_n is reported."""
    params = {**SAMPLING_PARAMETERS, "n": "2", "temperature": "1"}
    before = _scrape_settled(triton_metrics)
    for _ in range(2):
        run_vllm_requests(triton_grpc_url, PROMPTS, params)
    after = _scrape_settled(triton_metrics)
    metrics = parse_vllm_metrics(triton_metrics)
    for name in ("vllm:request_params_n_count", "vllm:request_params_n_sum", "vllm:request_params_n_bucket"):
        assert name in metrics
    assert _sample(after, "vllm:request_params_n_count") - _sample(before, "vllm:request_params_n_count") == 6
    assert _sample(after, "vllm:request_params_n_sum") - _sample(before, "vllm:request_params_n_sum") == 12


# ---- ci/L0_check_health_vllm/check_health_test.py ----


def test_vllm_is_healthy(triton_grpc_url):
    """test_vllm_is_healthy (health check unspecified). test_vllm_not_healthy patches vLLM's installed
    check_health() and needs ENABLE_VLLM_HEALTH_CHECK: not ported (our health check is the control op)."""
    with grpcclient.InferenceServerClient(triton_grpc_url) as client:
        for _ in range(3):
            assert client.is_model_ready(MODEL)
            states = [m.state for m in client.get_model_repository_index().models if m.name == MODEL]
            assert states == ["READY"]
            texts, errors = asyncio.run(stream_vllm(triton_grpc_url, ["In this example,"]))
            assert not errors and "".join(text for _, text in texts)
        assert client.is_model_ready(MODEL)


# ---- ci/L0_multi_gpu_vllm/multi_lora/multi_lora_test.py ----


def test_multi_lora_requests(triton_grpc_url, offline):
    """Their adapters are GemmaDoll/GemmaSheep on gemma-2b with TP=2 (GPU); ours are the tiny adapters, checked
    against offline vLLM with the same adapter."""
    for name, prompt in zip(LORA_NAMES, LORA_PROMPTS, strict=True):
        got = run_vllm_requests(triton_grpc_url, [prompt], {**SAMPLING_PARAMETERS, "lora_name": name}, exclude=True)
        assert got == offline[f"lora-{name}"]


def test_none_exist_lora(triton_grpc_url):
    """Theirs expects "LoRA bactrian is not supported, we currently support [...]"; ours names it our way."""
    with pytest.raises(AssertionError, match="unknown LoRA adapter 'bactrian'"):
        run_vllm_requests(
            triton_grpc_url,
            ["Instruct: What is the capital city of France?\nOutput:"],
            {**SAMPLING_PARAMETERS, "lora_name": "bactrian"},
            exclude=True,
        )


# ---- ci/L0_backend_vllm/accuracy_test/accuracy_test.py ----


def test_accuracy_against_offline_vllm(triton_grpc_url, offline):
    """test_vllm_model and test_structured_outputs: served text == vLLM's offline engine (same engine arguments).

    Their final check compares `list.sort()` results (None == None), so it cannot fail; this one compares the texts.
    The structured-output request sends `structured_outputs` as a JSON *string*, as theirs does.
    """
    served = run_vllm_requests(triton_grpc_url, PROMPTS, GREEDY_INT)
    assert served == [prompt + offline[f"accuracy-{i}"][0] for i, prompt in enumerate(PROMPTS)]
    structured = {**GREEDY_INT, "structured_outputs": json.dumps(CHOICE)}
    served = run_vllm_requests(triton_grpc_url, [STRUCTURED_PROMPT], structured)
    assert served == [STRUCTURED_PROMPT + offline["structured"][0]]
    assert offline["structured"][0] in CHOICE["choice"]


# ---- samples/client.py ----


async def sample_client(url: str, streaming_mode: bool, exclude_inputs_in_outputs: bool, iterations: int = 1):
    """samples/client.py's LLMClient.run: prompts.txt lines (with their newlines), results keyed by response id."""
    sampling_parameters = {"temperature": "0.1", "top_p": "0.95", "max_tokens": "100"}
    results: dict[str, list[bytes]] = {}
    success = True
    client = aio_grpcclient.InferenceServerClient(url=url)

    async def request_iterator():
        for iteration in range(iterations):
            for i, prompt in enumerate(SAMPLE_PROMPTS):
                prompt_id = len(SAMPLE_PROMPTS) * iteration + i
                results[str(prompt_id)] = []
                inputs = create_vllm_request(prompt, prompt_id, streaming_mode, sampling_parameters, MODEL)["inputs"]
                inputs.append(aio_grpcclient.InferInput("exclude_input_in_output", [1], "BOOL"))
                inputs[-1].set_data_from_numpy(np.array([exclude_inputs_in_outputs], dtype=bool))
                yield {
                    "model_name": MODEL,
                    "inputs": inputs,
                    "outputs": [aio_grpcclient.InferRequestedOutput("text_output")],
                    "request_id": str(prompt_id),
                    "parameters": sampling_parameters,
                }

    try:
        async for result, error in client.stream_infer(inputs_iterator=request_iterator()):
            if error:
                success = False
                results.setdefault("errors", []).append(str(error).encode())
            else:
                for item in result.as_numpy("text_output"):
                    results[result.get_response().id].append(item)
    finally:
        await client.close()
    return success, {key: b"".join(value).decode("utf-8") for key, value in results.items()}


@pytest.mark.parametrize(
    ("streaming_mode", "exclude"), [(False, False), (False, True), (True, True), (True, False)], ids=str
)
def test_sample_client(triton_grpc_url, streaming_mode, exclude):
    """PASS: vLLM example, for every prompt. (With -s and without --exclude-inputs-in-outputs, the sample itself
    fails on vllm_backend, which refuses exclude_input_in_output=False when streaming; here it works.)"""
    success, results = asyncio.run(sample_client(triton_grpc_url, streaming_mode, exclude, iterations=2))
    assert success, results.get("errors")
    assert sorted(results, key=int) == [str(i) for i in range(2 * len(SAMPLE_PROMPTS))]
    for key, text in results.items():
        prompt = SAMPLE_PROMPTS[int(key) % len(SAMPLE_PROMPTS)]
        assert len(text) > (0 if exclude else len(prompt))
        assert text.startswith(prompt) != exclude
