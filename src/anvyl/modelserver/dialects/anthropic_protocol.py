"""Anthropic Messages: the request models of `POST /v1/messages` and `/v1/messages/count_tokens`.

Unknown fields are allowed (Anthropic adds fields often); the known ones are validated. Fields
that change nothing for a local model (`metadata`, `service_tier`, `cache_control` on any block,
`output_config.effort`, `thinking` for a model that does not reason) are accepted as inert, and
block types the server cannot read (images, documents, server tools) are refused by name.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from anvyl.modelserver.protocol import MAX_STOP_SEQUENCES


class Loose(BaseModel):
    """Base: extra fields allowed."""

    model_config = ConfigDict(extra="allow")


class Block(Loose):
    """One content block; which fields matter depends on `type` (checked in translation)."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None


class Message(Loose):
    """One turn of `messages`."""

    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolSpec(Loose):
    """A client tool: name, description and the JSON schema of its input."""

    type: str | None = None  # "custom" or absent; server tools (web_search...) are refused
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ToolChoice(Loose):
    """`tool_choice`: auto, any, a named tool, or none."""

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class OutputFormat(Loose):
    """`output_config.format`: a JSON schema the answer must match."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(Loose):
    """`output_config` (`effort` is accepted and inert)."""

    format: OutputFormat | None = None
    effort: str | None = None


class CountTokensRequest(Loose):
    """`POST /v1/messages/count_tokens`: the prompt part of a Messages request."""

    model: str
    messages: Annotated[list[Message], Field(min_length=1)]
    system: str | list[Block] | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
    thinking: dict[str, Any] | None = None


class MessagesRequest(CountTokensRequest):
    """`POST /v1/messages`."""

    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stream: bool = False
