"""The response thread's pacing and merging, with a recording sender in place of Triton's (the real path is covered
by the integration tests; here the timing rules are checked on their own)."""

from __future__ import annotations

import threading
import time

import pytest

from tests.unit import fake_pb_utils


@pytest.fixture(scope="module")
def responder_module():
    with fake_pb_utils.model_module("responder") as module:
        yield module


class RecordingSender:
    """Records (time, texts, flags) per send; each send takes `cost` seconds, like an IPC round trip."""

    def __init__(self, cost: float = 0.0) -> None:
        self.cost = cost
        self.sent: list[tuple[float, list[str], int]] = []
        self.done = threading.Event()

    def send(self, response=None, flags: int = 0) -> None:
        time.sleep(self.cost)
        texts = [] if response is None else [t.decode() for t in response.tensors.get("text_output", [])]
        self.sent.append((time.monotonic(), texts, flags))
        if flags:
            self.done.set()

    def is_cancelled(self) -> bool:
        return False


class Logger:
    def log_warn(self, message: str) -> None:
        raise AssertionError(message)


FLAGS = {
    "return_finish_reason": True,
    "return_cumulative_logprob": False,
    "return_logprobs": False,
    "return_num_input_tokens": False,
    "return_num_output_tokens": True,
}


def step(module, text: str, first: bool = False, final: bool = False):
    return module.Step(
        texts=[text],
        finish_reasons=["length" if final else ""],
        num_input_tokens=3,
        num_output_tokens=[1],
        cumulative_logprobs=[0.0],
        logprobs=[[]],
        final=final,
        first=first,
    )


def test_steps_queued_while_resting_are_merged_and_nothing_is_lost(responder_module):
    responder = responder_module.Responder(Logger())
    senders = [RecordingSender(cost=0.004) for _ in range(8)]
    try:
        for sender in senders:  # one round of first tokens: sent at once, and long enough to make the thread rest
            responder.step(sender, step(responder_module, "a", first=True), FLAGS, stream=True)
        for index in range(10):
            for sender in senders:
                last = index == 9
                responder.step(sender, step(responder_module, str(index), final=last), FLAGS, stream=True)
            time.sleep(0.002)
        for sender in senders:
            assert sender.done.wait(5)
    finally:
        responder.stop()
    for sender in senders:
        assert "".join("".join(texts) for _, texts, _ in sender.sent) == "a0123456789"
        assert [flags for _, _, flags in sender.sent][-1] == 1
        assert sum(flags for _, _, flags in sender.sent) == 1
    # 11 steps per request, but the thread rested between rounds: fewer responses than steps.
    assert sum(len(s.sent) for s in senders) < 8 * 11


def test_a_lone_stream_gets_every_step_as_its_own_response(responder_module):
    responder = responder_module.Responder(Logger())
    sender = RecordingSender()
    try:
        responder.step(sender, step(responder_module, "a", first=True), FLAGS, stream=True)
        for index in range(5):
            time.sleep(0.01)  # an engine step
            responder.step(sender, step(responder_module, str(index), final=index == 4), FLAGS, stream=True)
        assert sender.done.wait(5)
    finally:
        responder.stop()
    assert [texts for _, texts, _ in sender.sent] == [["a"], ["0"], ["1"], ["2"], ["3"], ["4"]]


def test_first_response_is_not_held_back_by_a_rest(responder_module):
    responder = responder_module.Responder(Logger())
    busy = [RecordingSender(cost=0.015) for _ in range(2)]  # a 30 ms round: the thread then rests up to 20 ms
    newcomer = RecordingSender()
    try:
        for sender in busy:
            responder.step(sender, step(responder_module, "x", first=True), FLAGS, stream=True)
        time.sleep(0.035)  # the round is over; the thread rests now
        queued = time.monotonic()
        responder.step(newcomer, step(responder_module, "hi", first=True, final=True), FLAGS, stream=True)
        assert newcomer.done.wait(5)
        for sender in busy:
            responder.close(sender)
    finally:
        responder.stop()
    assert newcomer.sent[0][0] - queued < 0.01


def test_a_last_response_goes_out_during_a_rest_while_other_streams_keep_resting(responder_module):
    responder = responder_module.Responder(Logger())
    resting, ending = RecordingSender(cost=0.015), RecordingSender(cost=0.015)  # a 30 ms round, then a 20 ms rest
    try:
        for sender in (resting, ending):
            responder.step(sender, step(responder_module, "x", first=True), FLAGS, stream=True)
        time.sleep(0.035)  # the round is over; the thread rests now
        responder.step(resting, step(responder_module, "y"), FLAGS, stream=True)
        queued = time.monotonic()
        responder.step(ending, step(responder_module, "z", final=True), FLAGS, stream=True)
        assert ending.done.wait(5)
        responder.step(resting, step(responder_module, "!", final=True), FLAGS, stream=True)
        assert resting.done.wait(5)
    finally:
        responder.stop()
    final_sent = ending.sent[-1][0]
    assert final_sent - queued < 0.03  # its own 15 ms send, no rest
    assert [texts for _, texts, _ in ending.sent] == [["x"], ["z"]]
    # The other stream's middle step waited for the rest to end: it went out after the final response.
    middle = next(t for t, texts, _ in resting.sent if "y" in "".join(texts))
    assert middle > final_sent
    assert "".join("".join(texts) for _, texts, _ in resting.sent) == "xy!"


def test_unpaced_responder_sends_as_soon_as_it_can(responder_module):
    responder = responder_module.Responder(Logger(), pace=False)
    sender = RecordingSender()
    try:
        responder.step(sender, step(responder_module, "a", first=True), FLAGS, stream=True)
        responder.step(sender, step(responder_module, "b", final=True), FLAGS, stream=True)
        assert sender.done.wait(5)
    finally:
        responder.stop()
    assert "".join("".join(texts) for _, texts, _ in sender.sent) == "ab"


def _responses_for_steady_stream(module, pace: bool) -> int:
    """60 steps, one per ms, of one request whose every send takes 3 ms."""
    responder = module.Responder(Logger(), pace=pace)
    sender = RecordingSender(cost=0.003)
    try:
        responder.step(sender, step(module, "a", first=True), FLAGS, stream=True)
        for index in range(60):
            time.sleep(0.001)
            responder.step(sender, step(module, "b", final=index == 59), FLAGS, stream=True)
        assert sender.done.wait(5)
    finally:
        responder.stop()
    assert "".join("".join(texts) for _, texts, _ in sender.sent) == "a" + "b" * 60
    return len(sender.sent)


def test_pacing_sends_fewer_responses_than_sending_whenever_free(responder_module):
    paced = _responses_for_steady_stream(responder_module, pace=True)
    unpaced = _responses_for_steady_stream(responder_module, pace=False)
    assert paced < 0.8 * unpaced, (paced, unpaced)


class CancellableSender(RecordingSender):
    """Counts cancellation checks; reports cancelled once `cancel()` was called."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0
        self.cancelled = False

    def is_cancelled(self) -> bool:
        self.checks += 1
        return self.cancelled


def test_cancellation_checks_stay_bounded_with_many_requests_and_still_find_the_cancelled_one(responder_module):
    responder = responder_module.Responder(Logger())
    senders = [CancellableSender() for _ in range(50)]
    noticed = threading.Event()
    try:
        for sender in senders:
            responder.watch(sender, noticed.set)
        time.sleep(1.0)
        checks = sum(s.checks for s in senders)
        senders[7].cancelled = True
        assert noticed.wait(3)
    finally:
        responder.stop()
    # Every 0.1 s for all 50 would be ~500 checks a second; the cap is 100 a second (plus one round at the start).
    assert checks <= responder_module.MAX_CANCEL_CHECKS_PER_SECOND * 1.0 + 50, checks
    assert min(s.checks for s in senders) >= 1  # yet every request was looked at


def test_few_requests_are_checked_every_tenth_of_a_second(responder_module):
    responder = responder_module.Responder(Logger())
    sender = CancellableSender()
    try:
        responder.watch(sender, lambda: None)
        time.sleep(0.55)
    finally:
        responder.stop()
    assert 4 <= sender.checks <= 6, sender.checks


class FreedOnFinalSender(CancellableSender):
    """Counts cancellation checks made after the final response, when Triton has freed the response factory."""

    def __init__(self) -> None:
        super().__init__()
        self.checks_after_final = 0

    def is_cancelled(self) -> bool:
        self.checks_after_final += self.done.is_set()
        return super().is_cancelled()


@pytest.mark.parametrize("ending", ["final step", "error response", "close"])
def test_a_request_is_not_checked_for_cancellation_after_its_final_response(responder_module, ending):
    """The engine loop unwatches a request only after it queued the final response; the responder may send that
    response first, and must not then poll the sender (Triton would read the freed response factory)."""
    responder = responder_module.Responder(Logger())
    sender = FreedOnFinalSender()
    try:
        responder.watch(sender, lambda: None)
        time.sleep(2 * responder_module.CANCEL_POLL_SECONDS)
        if ending == "final step":
            responder.step(sender, step(responder_module, "end", first=True, final=True), FLAGS, stream=True)
        elif ending == "error response":
            responder.send(sender, responder_module.pb_utils.InferenceResponse(output_tensors=[]))
        else:
            responder.close(sender)
        assert sender.done.wait(2)
        time.sleep(3 * responder_module.CANCEL_POLL_SECONDS)  # polls that would come before the engine loop unwatches
    finally:
        responder.stop()
    assert sender.checks >= 1  # it was watched while in flight
    assert sender.checks_after_final == 0


def test_unfinished_sequences_report_finish_reason_none_as_vllm_backend(responder_module):
    """vllm_backend sends str(None) == "None" before a sequence finishes; clients compare with it."""
    flags = {**FLAGS, "return_finish_reason": True}
    going = responder_module.build_response(step(responder_module, "a"), flags)
    done = responder_module.build_response(step(responder_module, "b", final=True), flags)
    assert going.tensors["finish_reason"].tolist() == [b"None"]
    assert done.tensors["finish_reason"].tolist() == [b"length"]
