"""Tool calling: the structured-output schema for forced calls, and the parsers that find calls in model output.

Our own small parsers, not vLLM's: importing vLLM's tool parsers into the frontend loads vLLM and torch
(measured: +8 s start, +460 MiB RSS; see README "Tool calling"). Parsers, picked with --tool-call-parser for
`tool_choice: "auto"`:

- `hermes`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks, text around them is content
  (Hermes, Qwen 2.5/3, SmolLM3 and our examples/tool_chat_template_chatml.jinja);
- `llama3_json`: the whole output is `{"name": ..., "parameters": {...}}` objects (optionally after
  `<|python_tag|>`, several separated by `;`), else it is content (Llama 3.1/3.2 JSON tool calling).

Forced calls (named, `"required"`) need no parser: the engine's structured outputs make the model write the
arguments object (named) or a JSON array of `{"name", "parameters"}` (required, vLLM's schema).
One scanner (`CallScanner`) reads calls out of growing JSON text, so streamed and whole answers agree.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

TOOL_CALL_PARSERS = ("hermes", "llama3_json")
NAME_KEY = "name"
ARGUMENT_KEYS = ("arguments", "parameters")
HERMES_OPEN = "<tool_call>"
HERMES_CLOSE = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def _parameters(parameters: dict[str, Any] | None) -> dict[str, Any]:
    return parameters if parameters else {"type": "object", "properties": {}}


def named_schema(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """The arguments object of one named function."""
    return _parameters(parameters)


def required_schema(tools: list[tuple[str, dict[str, Any] | None]], parallel: bool) -> dict[str, Any]:
    """vLLM's schema for tool_choice "required": an array of {"name", "parameters"}, anyOf over the tools."""
    schema: dict[str, Any] = {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "anyOf": [
                {
                    "properties": {"name": {"type": "string", "enum": [name]}, "parameters": _parameters(params)},
                    "required": ["name", "parameters"],
                }
                for name, params in tools
            ],
        },
    }
    if not parallel:
        schema["maxItems"] = 1
    return schema


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class _Call:
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # arguments seen before the name


class CallScanner:
    """Reads tool calls out of JSON text as it grows: objects `{"name": str, "arguments"|"parameters": value}`
    opened at nesting level `call_depth` (1: bare objects, 2: objects inside an array).

    `feed()` returns events: ("start", name) once the name is known, ("args", fragment) for the raw text of an
    object (or array) arguments value as it arrives, or the decoded text of a string value at its end.
    """

    def __init__(self, call_depth: int = 1) -> None:
        self.call_depth = call_depth
        self.outer = 0  # nesting level outside call objects
        self.outer_string = False
        self.outer_escape = False
        self.call: _Call | None = None
        self.state = ""
        self.key: list[str] = []
        self.last_key: str | None = None
        self.value: list[str] = []
        self.nest = 0
        self.in_string = False
        self.escape = False
        self.streaming = False

    def feed(self, text: str) -> list[tuple[str, str]]:
        events: list[tuple[str, str]] = []
        for char in text:
            if self.call is None:
                self._outside(char)
            else:
                self._inside(char, events)
        return events

    def _outside(self, char: str) -> None:
        if self.outer_string:
            if self.outer_escape:
                self.outer_escape = False
            elif char == "\\":
                self.outer_escape = True
            elif char == '"':
                self.outer_string = False
        elif char == '"':
            self.outer_string = True
        elif char in "{[":
            self.outer += 1
            if char == "{" and self.outer == self.call_depth:
                self.call, self.state = _Call(), "key?"
        elif char in "}]":
            self.outer = max(0, self.outer - 1)

    def _inside(self, char: str, events: list[tuple[str, str]]) -> None:
        state = self.state
        if state in ("key?", "after"):
            if char == "}":
                self._end_call(events)
            elif state == "key?" and char == '"':
                self.state, self.key = "key", []
            elif char == ",":
                self.state = "key?"
            return
        if state == "key":
            if self.escape:
                self.escape = False
            elif char == "\\":
                self.escape = True
            elif char == '"':
                try:
                    self.last_key = json.loads('"' + "".join(self.key) + '"')
                except json.JSONDecodeError:
                    self.last_key = None
                self.state = ":"
                return
            self.key.append(char)
            return
        if state == ":":
            if char == ":":
                self.state = "value?"
            return
        if state == "value?":
            if char.isspace():
                return
            self.value, self.nest, self.in_string, self.escape = [], 0, False, False
            self.streaming = self.last_key in ARGUMENT_KEYS and char in "{["
            self.state = "value"
        self._value_char(char, events)

    def _value_char(self, char: str, events: list[tuple[str, str]]) -> None:
        if self.in_string:
            if self.escape:
                self.escape = False
            elif char == "\\":
                self.escape = True
            elif char == '"':
                self.in_string = False
        elif char == '"':
            self.in_string = True
        elif char in "{[":
            self.nest += 1
        elif char in "}]":
            if self.nest == 0:  # the call object closes after a scalar value
                self._finish_value(events)
                self._end_call(events)
                return
            self.nest -= 1
        elif char == "," and self.nest == 0:
            self._finish_value(events)
            self.state = "key?"
            return
        self.value.append(char)
        if self.streaming:
            self._emit_args(char, events)
        complete = self.nest == 0 and not self.in_string and len(self.value) > 1 and self.value[0] in '"{['
        if complete:
            self._finish_value(events)
            self.state = "after"

    def _emit_args(self, fragment: str, events: list[tuple[str, str]]) -> None:
        call = self.call
        if call.name is None:
            call.held.append(fragment)
        else:
            call.arguments.append(fragment)
            events.append(("args", fragment))

    def _finish_value(self, events: list[tuple[str, str]]) -> None:
        call, key, raw = self.call, self.last_key, "".join(self.value).strip()
        self.last_key, self.value = None, []
        if key == NAME_KEY and call.name is None:
            try:
                name = json.loads(raw)
            except json.JSONDecodeError:
                return
            if isinstance(name, str) and name:
                call.name = name
                events.append(("start", name))
                held, call.held = call.held, []
                for fragment in held:
                    self._emit_args(fragment, events)
        elif key in ARGUMENT_KEYS and not self.streaming and not (call.arguments or call.held):
            try:
                decoded = json.loads(raw)
            except json.JSONDecodeError:
                decoded = None
            self._emit_args(decoded if isinstance(decoded, str) else raw, events)
        self.streaming = False

    def _end_call(self, events: list[tuple[str, str]]) -> None:
        call = self.call
        self.call, self.state, self.last_key = None, "", None
        self.outer = max(0, self.outer - 1)
        if call.name is None:
            return
        if not call.arguments:
            call.arguments.append("{}")
            events.append(("args", "{}"))
        events.append(("end", ""))


@dataclass
class ToolDelta:
    """What one piece of model output adds to a choice: content text and tool-call deltas (OpenAI's shape)."""

    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def delta(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if self.content:
            result["content"] = self.content
        if self.tool_calls:
            result["tool_calls"] = self.tool_calls
        return result


class ToolOutput:
    """Turns one choice's output text, piece by piece, into content and tool calls; `calls` holds them whole."""

    def __init__(self, mode: str, parser: str | None = None, function_name: str | None = None) -> None:
        # mode: "named" (the text is the arguments of function_name), "required" (a JSON array of calls),
        # "auto" (the parser decides what is a call and what is content).
        self.mode = mode
        self.parser = parser
        self.function_name = function_name
        self.calls: list[ToolCall] = []
        self.content: list[str] = []
        self._scanner = CallScanner(call_depth=2 if mode == "required" else 1)
        self._pending = ""  # text held back: it may be the start of a tag
        self._inside = False  # hermes: inside <tool_call>
        self._decided: bool | None = None  # llama3_json: whether the output is calls
        self._block: list[str] = []  # hermes: the raw text of the current <tool_call> block
        self._block_calls = 0

    def feed(self, text: str, final: bool = False) -> ToolDelta:
        out = ToolDelta()
        if self.mode == "named":
            if text and not self.calls:
                self.calls.append(ToolCall(new_call_id(), self.function_name, ""))
                out.tool_calls.append(self._start_entry(0, self.calls[0]))
            if text:
                self.calls[0].arguments += text
                self._add_args(out, 0, text)
            return out
        if self.mode == "required":
            self._scan(text, out)
            return out
        if self.parser == "hermes":
            self._hermes(text, final, out)
        else:
            self._llama3_json(text, final, out)
        self.content.append(out.content)
        return out

    @property
    def text_content(self) -> str | None:
        text = "".join(self.content)
        if self.calls and not text.strip():
            return None
        return text

    def _start_entry(self, index: int, call: ToolCall) -> dict[str, Any]:
        return {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}

    def _add_args(self, out: ToolDelta, index: int, fragment: str) -> None:
        for entry in out.tool_calls:
            if entry["index"] == index:
                entry["function"]["arguments"] += fragment
                return
        out.tool_calls.append({"index": index, "function": {"arguments": fragment}})

    def _scan(self, text: str, out: ToolDelta) -> None:
        for kind, value in self._scanner.feed(text):
            if kind == "start":
                self.calls.append(ToolCall(new_call_id(), value, ""))
                out.tool_calls.append(self._start_entry(len(self.calls) - 1, self.calls[-1]))
            elif kind == "args":
                self.calls[-1].arguments += value
                self._add_args(out, len(self.calls) - 1, value)

    def _hermes(self, text: str, final: bool, out: ToolDelta) -> None:
        buffer = self._pending + text
        self._pending = ""
        while buffer:
            tag = HERMES_CLOSE if self._inside else HERMES_OPEN
            at = buffer.find(tag)
            if at >= 0:
                before, buffer = buffer[:at], buffer[at + len(tag) :]
                if self._inside:
                    self._hermes_block(before, out)
                    if len(self.calls) == self._block_calls:  # no call in the block: it was text after all
                        out.content += HERMES_OPEN + "".join(self._block) + HERMES_CLOSE
                    self._scanner = CallScanner(call_depth=1)
                else:
                    out.content += before
                    self._block, self._block_calls = [], len(self.calls)
                self._inside = not self._inside
                continue
            keep = 0 if final else _partial_suffix(buffer, tag)
            body, self._pending = buffer[: len(buffer) - keep], buffer[len(buffer) - keep :]
            if self._inside:
                self._hermes_block(body, out)
            else:
                out.content += body
            buffer = ""
        if final and self._pending:
            out.content += self._pending
            self._pending = ""

    def _hermes_block(self, text: str, out: ToolDelta) -> None:
        self._block.append(text)
        self._scan(text, out)

    def _llama3_json(self, text: str, final: bool, out: ToolDelta) -> None:
        if self._decided is None:
            self._pending += text
            start = self._pending.lstrip()
            if not start and not final:
                return
            if start.startswith(PYTHON_TAG):
                self._decided, text = True, start[len(PYTHON_TAG) :]
            elif PYTHON_TAG.startswith(start) and not final:
                return
            else:
                self._decided, text = start.startswith("{"), self._pending
            self._pending = ""
        if self._decided:
            self._scan(text, out)
        else:
            out.content += text


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper start of `tag`."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-length:]):
            return length
    return 0


def parse_whole(text: str, mode: str, parser: str | None = None, function_name: str | None = None) -> ToolOutput:
    """The whole output of one choice, parsed (non-streaming). In auto mode, output without a complete call, or
    with a call whose arguments are not JSON, is all content, as vLLM's parsers do."""
    output = ToolOutput(mode, parser, function_name)
    output.feed(text, final=True)
    if mode == "auto" and (not output.calls or any(not _is_json(call.arguments) for call in output.calls)):
        output.calls, output.content = [], [text]
    return output


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True
