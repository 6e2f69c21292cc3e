"""The wire contract: pydantic models for the OpenAI and LM Studio REST APIs.

Requests allow unknown fields (clients send extras such as `user` or `metadata`, which change
nothing here), but every known field is validated, and features the server does not implement are
refused by `refuse_unsupported` instead of being silently ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from anvyl.modelserver.errors import InvalidRequest

MAX_STOP_SEQUENCES = 16
MAX_CHOICES = 8  # `n`: choices per request
MAX_TOP_LOGPROBS = 20


class OpenAIModel(BaseModel):
    """Base of request models: extra fields allowed and ignored."""

    model_config = ConfigDict(extra="allow")


class StreamOptions(OpenAIModel):
    """`stream_options` of a streaming request."""

    include_usage: bool = False


class ContentPart(OpenAIModel):
    """One part of a multi-part message content."""

    type: str
    text: str | None = None


FUNCTION_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class FunctionCall(OpenAIModel):
    """The function of an assistant message's tool call (arguments as JSON text)."""

    name: str
    arguments: str = "{}"


class ToolCall(OpenAIModel):
    """One tool call of an assistant message sent back in the conversation."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(OpenAIModel):
    """One message of a chat."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionSpec(OpenAIModel):
    """A declared function: its name, description and JSON Schema of its arguments."""

    name: Annotated[str, Field(pattern=FUNCTION_NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(OpenAIModel):
    """One entry of `tools` (function tools only)."""

    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(OpenAIModel):
    """The function a named `tool_choice` forces."""

    name: str


class NamedToolChoice(OpenAIModel):
    """`tool_choice: {"type": "function", "function": {"name": ...}}`."""

    type: Literal["function"]
    function: NamedFunction


class JSONSchemaFormat(OpenAIModel):
    """`response_format.json_schema`: a named schema (`strict` changes nothing: always enforced)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIModel):
    """`response_format`: text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class SamplingRequest(OpenAIModel):
    """Fields shared by chat and text completions."""

    model: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=MAX_CHOICES)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = None
    logprobs: bool | Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        """Stop sequences are non-empty and few."""
        items = [value] if isinstance(value, str) else value or []
        if len(items) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(s == "" for s in items):
            raise ValueError("stop sequences must not be empty")
        return value

    def stop_list(self) -> tuple[str, ...]:
        """`stop` as a tuple of strings."""
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def logprob_count(self) -> int | None:
        """None without logprobs, else how many alternatives per token (chat: `top_logprobs`,
        completions: the integer `logprobs`)."""
        if self.logprobs is None or self.logprobs is False:
            return None
        if self.logprobs is True:
            return self.top_logprobs or 0
        return int(self.logprobs)

    def include_usage(self) -> bool:
        """Whether a streaming response ends with a usage chunk."""
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class ChatTemplateKwargs(OpenAIModel):
    """`chat_template_kwargs` (as vLLM and llama.cpp take it): only the thinking switch."""

    model_config = ConfigDict(extra="forbid")

    enable_thinking: bool | None = None


class ChatCompletionRequest(SamplingRequest):
    """`POST /v1/chat/completions`."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    chat_template_kwargs: ChatTemplateKwargs | None = None

    def requested_max_tokens(self) -> int | None:
        """`max_completion_tokens` (the newer name) or `max_tokens`."""
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingRequest):
    """`POST /v1/completions`."""

    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
    response_format: ResponseFormat | None = None

    def requested_max_tokens(self) -> int | None:
        """`max_tokens` (defaults to the server's limit)."""
        return self.max_tokens


def refuse_unsupported(request: SamplingRequest) -> None:
    """Raise `InvalidRequest` naming the first requested feature the server does not implement."""
    if request.top_logprobs and request.logprobs is not True:
        _refuse("top_logprobs", "top_logprobs needs logprobs: true")
    if isinstance(request, ChatCompletionRequest):
        _refuse_unsupported_chat(request)
    elif isinstance(request, CompletionRequest):
        if request.echo:
            _refuse("echo", "echo is not supported")
        if request.suffix:
            _refuse("suffix", "suffix (insertion) is not supported")
        if request.best_of is not None and request.best_of > 1:
            _refuse("best_of", "best_of > 1 is not supported")


def _refuse_unsupported_chat(request: ChatCompletionRequest) -> None:
    """The chat-only part of `refuse_unsupported`."""
    if request.functions or request.function_call not in (None, "none", "auto"):
        _refuse(
            "functions", "the legacy functions/function_call fields are not supported; use tools"
        )
    if request.tools and request.response_format and request.response_format.type != "text":
        _refuse("response_format", "response_format together with tools is not supported")
    for i, message in enumerate(request.messages):
        if message.role == "function":
            _refuse(f"messages[{i}]", "role 'function' (legacy) is not supported; use 'tool'")
        if isinstance(message.content, list):
            for part in message.content:
                if part.type != "text" or part.text is None:
                    _refuse(
                        f"messages[{i}].content",
                        f"content parts of type {part.type!r} are not supported; only text",
                    )


def _refuse(param: str, message: str) -> None:
    """Raise the 400 for an unsupported feature."""
    raise InvalidRequest(message, param=param, code="unsupported_feature")


def message_text(message: ChatMessage) -> str:
    """A message's content as one string (text parts joined)."""
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return "".join(part.text or "" for part in message.content)


# ---------------------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    """A fresh response id such as `chatcmpl-...`."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    """Unix time in whole seconds, for `created`."""
    return int(time.time())


class Usage(BaseModel):
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    completion_tokens_details: dict[str, int] | None = None  # chat: `reasoning_tokens`

    @classmethod
    def of(
        cls, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int | None = None
    ) -> Usage:
        """Usage with the total filled in (and the reasoning tokens, when given)."""
        details = None if reasoning_tokens is None else {"reasoning_tokens": reasoning_tokens}
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            completion_tokens_details=details,
        )


class Stats(BaseModel):
    """LM Studio's `stats` of a generation."""

    tokens_per_second: float
    time_to_first_token: float
    generation_time: float
    stop_reason: str


class ModelCard(BaseModel):
    """One entry of `GET /v1/models`."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "anvyl"
    tool_format: str | None = None  # how the model writes tool calls (see tools.py)


class ModelList(BaseModel):
    """`GET /v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class LMStudioModel(BaseModel):
    """One entry of LM Studio's `GET /api/v0/models`."""

    id: str
    object: Literal["model"] = "model"
    type: str = "llm"
    publisher: str = "anvyl"
    arch: str
    compatibility_type: str = "mlx"
    quantization: str
    state: Literal["loaded", "not-loaded", "loading"]
    max_context_length: int
    loaded_context_length: int | None = None
    loaded_dtype: str | None = None
    # `kernel`, `partial (MLX ops: ...)` or `mlx`: whether the layers run on Anvyl's CPU kernels.
    fast_path: str | None = None
    memory_limit: str | None = None
    tool_format: str | None = None


class LMStudioModelList(BaseModel):
    """LM Studio's `GET /api/v0/models`."""

    object: Literal["list"] = "list"
    data: list[LMStudioModel]
