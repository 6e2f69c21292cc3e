"""OpenAI Responses: the request model of `POST /v1/responses`.

Unknown fields are allowed and the known ones validated; `metadata`, `user`, `include`,
`reasoning.summary` and `truncation: "disabled"` change nothing and are accepted; `reasoning.effort`
switches a reasoning template on or off (see responses.py).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Loose(BaseModel):
    """Base: extra fields allowed."""

    model_config = ConfigDict(extra="allow")


class Item(Loose):
    """One input item: a message, a function call, a function call's output (checked later)."""

    type: str | None = None  # absent on plain `{"role", "content"}` messages
    role: str | None = None
    content: str | list[dict[str, Any]] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[dict[str, Any]] | None = None


class FunctionTool(Loose):
    """A function tool (the only kind a local model can call)."""

    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(Loose):
    """`text.format`: text, any JSON object, or JSON matching a schema."""

    type: Literal["text", "json_object", "json_schema"]
    name: str = "response"
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(Loose):
    """`text` (`verbosity` is inert)."""

    format: TextFormat | None = None


class ResponsesRequest(Loose):
    """`POST /v1/responses`."""

    model: str
    input: str | list[Item]
    instructions: str | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: bool | None = None
