"""OpenAI request/response models (stream chunks included), and the one mapping from OpenAI fields to the model's
sampling_parameters.

Ranges are validated here (pydantic), once. Unknown extra fields are tolerated, as vLLM does, and logged once per
name (RequestModel); fields we know and cannot honour are rejected with a 400 naming them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from frontend.errors import bad_request
from frontend.tool_calls import named_schema, required_schema

logger = logging.getLogger("frontend")

MAX_N = 16
MAX_LOGPROBS = 5

# Unknown fields are logged once per (model, name), for the first MAX_LOGGED_UNKNOWN names: what clients send that
# the frontend does not take, without letting clients grow the set (or the log) without bound.
MAX_LOGGED_UNKNOWN = 256
_logged_unknown: set[tuple[str, str]] = set()


class RequestModel(BaseModel):
    """A request body, or a part of one: unknown fields are tolerated, as vLLM does, and logged once per name."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_unknown_fields(self) -> RequestModel:
        for name in self.model_extra or ():
            key = (type(self).__name__, name)
            if key not in _logged_unknown and len(_logged_unknown) < MAX_LOGGED_UNKNOWN:
                _logged_unknown.add(key)
                logger.warning("ignored unknown request field '%s' in %s (logged once per name)", name, key[0])
        return self


class StreamOptions(RequestModel):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class JsonSchemaFormat(RequestModel):
    model_config = ConfigDict(populate_by_name=True)
    name: str = "schema"
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(RequestModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.json_schema is None):
            raise ValueError("response_format of type 'json_schema' needs json_schema.schema")
        return self


Probability = Annotated[float, Field(ge=0.0, le=1.0)]
# Integers the engine stores as int64 (larger ones would fail inside the engine instead of as a 400).
INT64_MAX = 2**63 - 1
Int64 = Annotated[int, Field(ge=-(2**63), le=INT64_MAX)]
Count = Annotated[int, Field(ge=1, le=INT64_MAX)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]


class SamplingRequest(RequestModel):
    """Fields shared by completions and chat completions, and their mapping to sampling_parameters."""

    model: str
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    max_tokens: Count | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    stop: str | list[str] | None = None
    seed: Int64 | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    user: str | None = None
    response_format: ResponseFormat | None = None
    # vLLM's extra sampling fields.
    top_k: Annotated[int, Field(le=INT64_MAX)] | None = None
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0)] | None = None
    ignore_eos: bool = False
    min_tokens: Annotated[int, Field(ge=0, le=INT64_MAX)] = 0
    stop_token_ids: list[Annotated[int, Field(ge=0, le=INT64_MAX)]] | None = None
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, value: int | None) -> int | None:
        if value is not None and value < -1:
            raise ValueError("top_k must be -1 or 0 (disabled) or at least 1")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias_keys(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value:
            for key in value:
                if not key.lstrip("-").isdigit() or int(key) < 0:
                    raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
        return value

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value == "" or (isinstance(value, list) and any(s == "" for s in value)):
            raise ValueError("stop sequences must not be empty strings")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def continuous_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.continuous_usage_stats)

    def check_stream_options(self) -> None:
        if self.stream_options is not None and not self.stream:
            raise bad_request("stream_options is only allowed when stream is true", param="stream_options")

    def _max_new_tokens(self) -> int | None:
        return self.max_tokens

    def param_name(self, sampling_key: str) -> str:
        """The request field a sampling parameter came from (for error messages)."""
        return sampling_key

    def _logprobs_count(self) -> int | None:
        return None

    def to_sampling_parameters(self) -> dict[str, Any]:
        """The model's `sampling_parameters` JSON object (vLLM SamplingParams names)."""
        params: dict[str, Any] = {"n": self.n, "max_tokens": self._max_new_tokens()}
        optional = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "seed": self.seed,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "repetition_penalty": self.repetition_penalty,
            "stop_token_ids": self.stop_token_ids,
            "logprobs": self._logprobs_count(),
        }
        params.update({key: value for key, value in optional.items() if value is not None})
        if self.stop:
            params["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if self.logit_bias:
            params["logit_bias"] = {str(int(k)): v for k, v in self.logit_bias.items()}
        for flag, default in (
            ("ignore_eos", False),
            ("skip_special_tokens", True),
            ("spaces_between_special_tokens", True),
            ("include_stop_str_in_output", False),
        ):
            if getattr(self, flag) != default:
                params[flag] = getattr(self, flag)
        if self.min_tokens:
            params["min_tokens"] = self.min_tokens
        structured = self._structured_outputs()
        if structured:
            params["structured_outputs"] = structured
        return params

    def _structured_outputs(self) -> dict[str, Any] | None:
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return {"json_object": True}
        return {"json": fmt.json_schema.json_schema}


TokenIds = list[Annotated[int, Field(ge=0, le=INT64_MAX)]]


def prompt_list(value: str | list[str] | list[int] | list[list[int]], param: str) -> list[str | list[int]]:
    """OpenAI's prompt/input union as a list of prompts, each a string or a list of token ids."""
    if isinstance(value, str):
        return [value]
    if not value:
        raise bad_request(f"{param} must not be empty", param=param)
    if all(isinstance(p, int) for p in value):
        return [list(value)]
    if all(isinstance(p, str) for p in value):
        return list(value)
    if any(isinstance(p, list) and not p for p in value):
        raise bad_request(f"token-id {param}s must not be empty", param=param)
    return [list(p) for p in value]


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | TokenIds | list[TokenIds]
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    suffix: str | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _unsupported(self) -> CompletionRequest:
        if self.suffix:
            raise ValueError("suffix is not supported")
        if self.best_of is not None and self.best_of != self.n:
            raise ValueError("best_of is not supported (vLLM removed it); use n")
        if self.echo and self.logprobs is not None:
            raise ValueError("echo together with logprobs is not supported")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The prompt field as a list of prompts: each a string or a list of token ids."""
        return prompt_list(self.prompt, "prompt")

    def _logprobs_count(self) -> int | None:
        return self.logprobs


class TextPart(RequestModel):
    type: Literal["text"]
    text: str


# ---- tool calling: OpenAI's tools, tool_choice and tool-call messages ----


class FunctionDefinition(RequestModel):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _json_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            from jsonschema import SchemaError, validators

            try:
                validators.validator_for(value).check_schema(value)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON schema: {exc.message}") from None
        return value


class Tool(RequestModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(RequestModel):
    name: Annotated[str, Field(min_length=1)]


class NamedToolChoice(RequestModel):
    type: Literal["function"] = "function"
    function: NamedFunction


class FunctionCall(RequestModel):
    name: str
    arguments: str


class ToolCallMessage(RequestModel):
    """A tool call: in an assistant message the client sends back, and in our responses."""

    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall

    def template_dict(self) -> dict[str, Any]:
        """As vLLM hands tool calls to chat templates: arguments parsed from their JSON text when they are JSON."""
        try:
            arguments: Any = json.loads(self.function.arguments)
        except json.JSONDecodeError:
            arguments = self.function.arguments
        return {"id": self.id, "type": "function", "function": {"name": self.function.name, "arguments": arguments}}


# ---- end of the tool-calling block ----


class ChatMessage(RequestModel):
    role: Annotated[str, Field(min_length=1)]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallMessage] | None = None
    tool_call_id: str | None = None

    def template_dict(self) -> dict[str, Any]:
        """The message as chat templates expect it: text parts joined into one string."""
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        message: dict[str, Any] = {"role": self.role, "content": content if content is not None else ""}
        if self.name is not None:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = [call.template_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


MAX_TOP_LOGPROBS = 20


class ChatCompletionRequest(SamplingRequest):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Count | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    functions: list[Any] | None = None
    function_call: Any = None

    @model_validator(mode="after")
    def _unsupported(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs to be true")
        for name in ("functions", "function_call"):
            if getattr(self, name):
                raise ValueError(f"{name} is not supported (deprecated by OpenAI); use tools and tool_choice")
        return self

    # ---- tool calling ----

    @property
    def tool_mode(self) -> str | None:
        """None (no tools, or tool_choice "none"), "auto", "required" or "named"."""
        if not self.tools or self.tool_choice == "none":
            return None
        if isinstance(self.tool_choice, NamedToolChoice):
            return "named"
        return self.tool_choice or "auto"

    def named_tool(self) -> Tool | None:
        if not isinstance(self.tool_choice, NamedToolChoice):
            return None
        return next((t for t in self.tools or () if t.function.name == self.tool_choice.function.name), None)

    def check_tools(self) -> None:
        """400s naming the field for tool requests that cannot be served."""
        if self.tool_choice not in (None, "none", "auto") and not self.tools:
            raise bad_request("tool_choice needs tools", param="tool_choice")
        names = [t.function.name for t in self.tools or ()]
        if len(set(names)) != len(names):
            raise bad_request("tools must have distinct function names", param="tools")
        if isinstance(self.tool_choice, NamedToolChoice) and self.named_tool() is None:
            name = self.tool_choice.function.name
            raise bad_request(f"tool_choice names function '{name}', which is not in tools", param="tool_choice")
        if self.tool_mode in ("named", "required") and self.response_format and self.response_format.type != "text":
            raise bad_request("response_format cannot be combined with a forced tool_choice", param="response_format")

    def template_tools(self) -> list[dict[str, Any]] | None:
        """The tools as chat templates take them (vLLM passes them for every tool_choice, "none" included)."""
        return [t.model_dump(exclude_none=True) for t in self.tools] if self.tools else None

    def _structured_outputs(self) -> dict[str, Any] | None:
        mode = self.tool_mode
        if mode == "named":
            return {"json": named_schema(self.named_tool().function.parameters)}
        if mode == "required":
            tools = [(t.function.name, t.function.parameters) for t in self.tools]
            return {"json": required_schema(tools, self.parallel_tool_calls)}
        return super()._structured_outputs()

    def _max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def param_name(self, sampling_key: str) -> str:
        if sampling_key == "max_tokens" and self.max_completion_tokens is not None:
            return "max_completion_tokens"
        return sampling_key

    def _logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def to_sampling_parameters(self) -> dict[str, Any]:
        params = super().to_sampling_parameters()
        # The rendered template already holds the special tokens.
        params["add_special_tokens"] = False
        return params


# ---- responses ----


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def _is_none(value: Any) -> bool:
    return value is None


# Left out of the JSON when None (OpenAI's chunks carry `usage` only when there is one, deltas only what changed).
OptionalUsage = Annotated[Usage | None, Field(default=None, exclude_if=_is_none)]


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


Choice = TypeVar("Choice", bound=BaseModel)


class Envelope(BaseModel):
    """What every completion response and stream chunk starts with; `object` names the shape."""

    id: str
    object: str
    created: int
    model: str


class WholeResponse(Envelope, Generic[Choice]):
    """A response that is not streamed: every choice whole, and the request's usage."""

    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None


class StreamChunk(Envelope, Generic[Choice]):
    """One streamed event: what it adds to some choices, and usage when there is some to report."""

    choices: list[Choice]
    usage: OptionalUsage


class CompletionChunkChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionChoice(CompletionChunkChoice):
    stop_reason: int | str | None = None


class CompletionResponse(WholeResponse[CompletionChoice]):
    object: Literal["text_completion"] = "text_completion"


class CompletionChunk(StreamChunk[CompletionChunkChoice]):
    # OpenAI's streamed completions reuse the response's `object`.
    object: Literal["text_completion"] = "text_completion"


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "triton-vllm"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class LoadLoraRequest(RequestModel):
    lora_name: Annotated[str, Field(min_length=1)]
    lora_path: Annotated[str, Field(min_length=1)]


class UnloadLoraRequest(RequestModel):
    lora_name: Annotated[str, Field(min_length=1)]


class ChatTopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(ChatTopLogprob):
    top_logprobs: list[ChatTopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None = None


class ChatResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCallMessage] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(WholeResponse[ChatChoice]):
    object: Literal["chat.completion"] = "chat.completion"


class FunctionCallDelta(BaseModel):
    name: Annotated[str | None, Field(exclude_if=_is_none)] = None
    arguments: Annotated[str | None, Field(exclude_if=_is_none)] = None


class ToolCallDelta(BaseModel):
    """A piece of a streamed tool call: its first piece has the id, type and name, later ones more arguments."""

    index: int
    id: Annotated[str | None, Field(exclude_if=_is_none)] = None
    type: Annotated[Literal["function"] | None, Field(exclude_if=_is_none)] = None
    function: Annotated[FunctionCallDelta | None, Field(exclude_if=_is_none)] = None


class ChatDelta(BaseModel):
    """What one chunk adds to a choice's message; only the fields it adds are sent."""

    role: Annotated[Literal["assistant"] | None, Field(exclude_if=_is_none)] = None
    content: Annotated[str | None, Field(exclude_if=_is_none)] = None
    tool_calls: Annotated[list[ToolCallDelta] | None, Field(exclude_if=_is_none)] = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(StreamChunk[ChatChunkChoice]):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"


# ---- utility routes: /tokenize and /detokenize, in vLLM's shapes ----


class TokenizeRequest(RequestModel):
    """vLLM's /tokenize: a completion `prompt`, or chat `messages` rendered as /v1/chat/completions renders them."""

    model: str | None = None
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    # None: as the matching generation route tokenizes (true for a prompt, false for rendered messages).
    add_special_tokens: bool | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[Tool] | None = None
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _one_input(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        return self


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(RequestModel):
    model: str | None = None
    tokens: TokenIds


class DetokenizeResponse(BaseModel):
    prompt: str


# ---- end of the utility-routes block ----


# ---- embeddings: /v1/embeddings in OpenAI's shapes ----


class EmbeddingRequest(RequestModel):
    model: str
    input: str | list[str] | TokenIds | list[TokenIds]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None

    def inputs(self) -> list[str | list[int]]:
        """Each input as a string or a list of token ids; empty strings are refused (OpenAI does too)."""
        inputs = prompt_list(self.input, "input")
        if any(item == "" for item in inputs):
            raise bad_request("input must not contain empty strings", param="input")
        return inputs


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


# ---- end of the embeddings block ----
