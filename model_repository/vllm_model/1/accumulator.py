"""The engine's outputs of one request, folded into what its responses carry (`Step`s).

No Triton imports (the response path, responder.py, turns Steps into tensors), so it can be unit-tested with vLLM's
own `RequestOutput`s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Step:
    """What one response carries, per sequence (text deltas when streaming, whole texts otherwise)."""

    texts: list[str]
    finish_reasons: list[str]
    num_input_tokens: int
    num_output_tokens: list[int]
    cumulative_logprobs: list[float]
    logprobs: list[list[dict[str, Any]] | None]  # None: the client did not ask for logprobs (sent as JSON null)
    final: bool
    first: bool = False  # the request's first streaming response: sent without waiting (as is the final one)

    def absorb(self, later: Step) -> None:
        """Fold a later streaming step of the same request into this one."""
        for i in range(len(self.texts)):
            self.texts[i] += later.texts[i]
            self.num_output_tokens[i] += later.num_output_tokens[i]
            self.finish_reasons[i] = later.finish_reasons[i] or self.finish_reasons[i]
            if self.logprobs[i] is not None:
                self.logprobs[i] = self.logprobs[i] + later.logprobs[i]
        self.cumulative_logprobs = later.cumulative_logprobs
        self.num_input_tokens = later.num_input_tokens
        self.final = later.final


@dataclass
class _Sequence:
    """Accumulated output of one of the n sequences of a request."""

    text: list[str] = field(default_factory=list)
    num_tokens: int = 0
    cumulative_logprob: float = 0.0
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = ""
    finish_reported: bool = False

    def new_finish_reason(self) -> str:
        """The finish reason once, in the response where the sequence finished; "" otherwise."""
        if self.finish_reason and not self.finish_reported:
            self.finish_reported = True
            return self.finish_reason
        return ""


class OutputAccumulator:
    """Folds one request's `RequestOutput`s (DELTA outputs when streaming, the FINAL_ONLY one otherwise).

    `fold(output)` returns the Step to send for that output when streaming (None otherwise); `final()` returns the
    Step with the whole answer when not streaming (None when streaming: the last fold carried it, or, with
    `finished` still False, the engine ended the request without a finished output).

    `n` is the number of sequences handed out; with `copies` > 1 the engine runs one greedy sequence that every one
    of the n receives. `prompt_text` is the text prompt (None for token ids: decoded with `decode` when the prompt
    is to be prepended).
    """

    def __init__(
        self,
        n: int,
        *,
        stream: bool,
        include_prompt: bool,
        report_logprobs: bool,
        prompt_text: str | None,
        decode: Callable[[list[int]], str],
        copies: int = 1,
    ) -> None:
        self.n = n
        self.copies = copies
        self.stream = stream
        self.include_prompt = include_prompt
        self.report_logprobs = report_logprobs
        self.prompt_text = prompt_text
        self.decode = decode
        self.num_input_tokens = 0
        self.finished = False  # a streamed Step with final=True was returned
        self._sequences = [_Sequence() for _ in range(n)]
        self._first = True

    def fold(self, output) -> Step | None:
        # vLLM may leave the prompt's details out of later streamed outputs (its serving code guards the same way).
        if output.prompt_token_ids is not None:
            self.num_input_tokens = len(output.prompt_token_ids)
            if self.include_prompt and self.prompt_text is None:
                self.prompt_text = self.decode(output.prompt_token_ids)
        n = self.n
        deltas = [""] * n
        delta_counts = [0] * n
        delta_logprobs: list[list[dict[str, Any]] | None] = [[] if self.report_logprobs else None for _ in range(n)]
        for completion in output.outputs:
            entries = None
            if completion.logprobs and self.report_logprobs:
                entries = logprob_entries(completion.token_ids, completion.logprobs)
            for index in range(n) if self.copies > 1 else (completion.index,):
                state = self._sequences[index]
                deltas[index] = completion.text
                delta_counts[index] = len(completion.token_ids)
                state.num_tokens += len(completion.token_ids)
                if completion.cumulative_logprob is not None:
                    state.cumulative_logprob = completion.cumulative_logprob
                if entries is not None:
                    delta_logprobs[index] = entries
                if completion.finish_reason:
                    state.finish_reason = completion.finish_reason
                if not self.stream:
                    state.text.append(completion.text)
                    state.logprobs.extend(delta_logprobs[index] or ())
        if not self.stream:
            return None
        if self._first and self.include_prompt:
            deltas = [(self.prompt_text or "") + d for d in deltas]
        step = Step(
            texts=deltas,
            finish_reasons=[s.new_finish_reason() for s in self._sequences],
            num_input_tokens=self.num_input_tokens,
            num_output_tokens=delta_counts,
            cumulative_logprobs=[s.cumulative_logprob for s in self._sequences],
            logprobs=delta_logprobs,
            final=output.finished,
            first=self._first,
        )
        self._first = False
        self.finished = output.finished
        return step

    def final(self) -> Step | None:
        if self.stream:
            return None
        prefix = (self.prompt_text or "") if self.include_prompt else ""
        sequences = self._sequences
        return Step(
            texts=[prefix + "".join(s.text) for s in sequences],
            finish_reasons=[s.finish_reason for s in sequences],
            num_input_tokens=self.num_input_tokens,
            num_output_tokens=[s.num_tokens for s in sequences],
            cumulative_logprobs=[s.cumulative_logprob for s in sequences],
            logprobs=[s.logprobs if self.report_logprobs else None for s in sequences],
            final=True,
        )


def logprob_entries(token_ids, logprobs) -> list[dict[str, Any]]:
    """One dict per generated token, vllm_backend's shape: {token_id: {logprob, rank, decoded_token}}.

    The sampled token comes first in each dict.
    """
    entries = []
    for token_id, position in zip(token_ids, logprobs, strict=False):
        ordered = {}
        sampled = position.get(token_id)
        if sampled is not None:
            ordered[str(token_id)] = _logprob_dict(sampled)
        for other_id, info in position.items():
            if other_id != token_id:
                ordered[str(other_id)] = _logprob_dict(info)
        entries.append(ordered)
    return entries


def _logprob_dict(info) -> dict[str, Any]:
    logprob = info.logprob
    if logprob != logprob or logprob in (float("inf"), float("-inf")):
        logprob = -9999.0
    return {"logprob": logprob, "rank": info.rank, "decoded_token": info.decoded_token}
