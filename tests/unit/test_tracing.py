"""TVO_TRACE: the stamps of the response path (model side, with the real Responder thread and a recording sender)
and bench/trace_budget.py's join of the processes' stamps into a per-hop budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from bench import trace_budget
from tests.unit import fake_pb_utils
from tests.unit.conftest import MODEL_VERSION_DIR, REPO
from tests.unit.test_responder import FLAGS, Logger, RecordingSender, step


@pytest.fixture()
def traced_responder(monkeypatch):
    with fake_pb_utils.model_module("responder") as module:
        import tracing

        ring = tracing.Ring("model")
        monkeypatch.setattr(module, "TRACE", True)
        monkeypatch.setattr(module, "TRACE_RING", ring)
        monkeypatch.setattr(tracing, "RING", ring)
        yield module, tracing, ring


def test_tracing_is_off_unless_the_variable_says_on():
    code = "import tracing, sys; sys.stdout.write(str(tracing.ENABLED))"
    for value, expected in (("", "False"), ("0", "False"), ("1", "True"), ("on", "True")):
        env = {**os.environ, "TVO_TRACE": value}
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=MODEL_VERSION_DIR, env=env, capture_output=True, text=True, check=True
        )
        assert result.stdout == expected, value
        frontend = subprocess.run(
            [sys.executable, "-c", "import sys; from frontend import tracing; sys.stdout.write(str(tracing.ENABLED))"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert frontend.stdout == expected, value


def test_every_output_and_response_is_stamped_and_merged_responses_name_their_last_output(traced_responder):
    module, tracing, ring = traced_responder
    responder = module.Responder(Logger())
    sender = RecordingSender(cost=0.01)  # slow sends: the steps queued meanwhile are merged
    trace = tracing.StreamTrace("req-1")
    try:
        for k in range(6):
            responder.step(sender, step(module, f"t{k}", first=k == 0, final=k == 5), FLAGS, True, trace, k)
            time.sleep(0.002)
        assert sender.done.wait(5)
    finally:
        responder.stop()
    assert "".join("".join(texts) for _, texts, _ in sender.sent) == "t0t1t2t3t4t5"
    hops = {}
    for key, index, hop, t_ns, extra in ring.events:
        assert key == "req-1"
        hops.setdefault(hop, []).append((index, t_ns, extra))
    assert [i for i, _, _ in hops["queued"]] == list(range(6))
    assert sorted(i for i, _, _ in hops["dequeued"]) == list(range(6))
    responses = len(sender.sent)
    assert responses < 6  # merged
    assert [i for i, _, _ in hops["build"]] == list(range(responses))
    assert [i for i, _, _ in hops["sent"]] == list(range(responses))
    assert hops["build"][-1][2] == 5  # the last response carries the last output
    assert trace.responses == responses


def test_untraced_steps_leave_the_ring_empty(traced_responder):
    module, _, ring = traced_responder
    responder = module.Responder(Logger())
    sender = RecordingSender()
    try:
        responder.step(sender, step(module, "a", first=True, final=True), FLAGS, True)
        assert sender.done.wait(5)
    finally:
        responder.stop()
    assert not ring.events


def test_ring_dumps_json_lines_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TVO_TRACE_DIR", str(tmp_path))
    from frontend import tracing

    ring = tracing.Ring("frontend")
    assert ring.dump() is None  # nothing to write
    ring.stamp("k", 0, "read")
    path = ring.dump()
    assert path == str(tmp_path / f"frontend-{os.getpid()}.jsonl")
    key, index, hop, t_ns, extra = json.loads(open(path).read())
    assert (key, index, hop, extra) == ("k", 0, "read", None) and t_ns > 0
    ring.stamp("k", 1, "read")
    assert ring.dump() is None


def _stream(events, key, completion, start_ns, responses, merge_first_two=False):
    """Synthetic stamps of one stream: each hop 1 ms after the previous one, responses 10 ms apart."""
    outputs = 0
    for r in range(responses):
        t = start_ns + r * 10_000_000
        carried = [outputs, outputs + 1] if merge_first_two and r == 1 else [outputs]
        for k in carried:
            for step_index, hop in enumerate(("engine", "loop", "queued", "dequeued")):
                events.append((key, k, hop, t + step_index * 1_000_000, None))
        outputs = carried[-1] + 1
        for step_index, hop in enumerate(("build", "send", "sent", "read", "parsed", "rendered", "written"), 4):
            extra = carried[-1] if hop == "build" else completion if hop == "rendered" else None
            events.append((key, r, hop, t + step_index * 1_000_000, extra))
        events.append((completion, r, "client", t + 11_000_000, None))


def test_budget_joins_the_processes_stamps_per_response():
    events: list = []
    _stream(events, "a", "cmpl-a", 0, 4)
    _stream(events, "b", "cmpl-b", 100_000_000, 3, merge_first_two=True)
    rows = trace_budget.responses(events)
    assert len(rows) == 7
    assert all(set(trace_budget.HOPS) | {"client"} <= set(row) for row in rows)
    merged = next(row for row in rows if row["_key"] == "b" and row["_index"] == 1)
    assert merged["engine"] == 110_000_000  # the stamps of output 2, the last one that response carries
    text = trace_budget.table(rows, "## synthetic")
    assert "5 responses after the first (7 in all)" in text
    assert "| TOTAL EngineCore step out -> client | 11.000 | 11.000 | 5 |" in text
    assert "| sender.send() call (stub -> Triton IPC) | 1.000 |" in text
    assert "| interval between responses at 'engine' (per token at c1) | 10.000 |" in text


def _response(text: str, final: bool = False):
    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelInferResponse()
    tensor = response.outputs.add(name="text_output", datatype="BYTES")
    tensor.shape.append(1)
    response.raw_output_contents.append(len(text.encode()).to_bytes(4, "little") + text.encode())
    if final:
        response.parameters["triton_final_response"].bool_param = True
    return response


def test_frontend_stamps_each_streamed_response_read_and_parsed(monkeypatch):
    import asyncio

    from frontend import tracing, triton

    ring = tracing.Ring("frontend")
    monkeypatch.setattr(triton, "TRACE", True)
    monkeypatch.setattr(triton, "TRACE_RING", ring)
    ids: list[str] = []

    async def fake_stream(self, message):
        ids.append(message.id)
        for response in (_response("a"), _response("b"), _response("c", final=True)):
            yield response

    monkeypatch.setattr(triton.TritonClient, "_stream", fake_stream)

    async def run():
        client = triton.TritonClient("127.0.0.1:1", "vllm_model")
        request = triton.GenerateRequest(prompt="p", sampling_parameters={}, stream=True)
        chunks = [chunk async for chunk in client.generate(request)]
        await client.close()
        return chunks

    chunks = asyncio.run(run())
    assert [c.texts for c in chunks] == [["a"], ["b"], ["c"]] and chunks[-1].final
    assert [c.trace for c in chunks] == [(ids[0], 0), (ids[0], 1), (ids[0], 2)]
    assert [(key, index, hop) for key, index, hop, _, _ in ring.events] == [
        (ids[0], i, hop) for i in range(3) for hop in ("read", "parsed")
    ]
